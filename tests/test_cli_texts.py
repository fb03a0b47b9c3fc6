"""What a new user sees first: the ``--help`` of every ``python -m`` entry point (issue 18).

Each command runs once, all of them side by side, in fresh interpreters whose environment has none
of the log settings conftest.py or the CI may have set, so the entry points' own defaults
(keras_nfnet/quiet.py) are what is tested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from keras_nfnet.quiet import filtered_stderr, is_startup_noise

LOG_SETTINGS = (
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_CPP_MAX_VLOG_LEVEL",
    "GRPC_VERBOSITY",
    "GLOG_minloglevel",
)
COMMANDS = {
    "train --help": (["-m", "training.train", "--help"], {}),
    "train --helpfull": (["-m", "training.train", "--helpfull"], {}),
    "eval --help": (["-m", "training.eval", "--help"], {}),
    "analysis --help": (["-m", "keras_nfnet.analysis", "--help"], {}),
    "convert --help": (["-m", "keras_nfnet.convert", "--help"], {}),
    # The user's own setting wins: TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's start-up lines.
    "convert --help, TF_CPP_MIN_LOG_LEVEL=0": (
        ["-m", "keras_nfnet.convert", "--help"],
        {"TF_CPP_MIN_LOG_LEVEL": "0"},
    ),
}
HELP_COMMANDS = [name for name, (_, env) in COMMANDS.items() if not env]
NOISE = ("oneDNN custom operations", "absl::InitializeLog")
LOG_LINE = re.compile(r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ")  # absl's format


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    """Every command of `COMMANDS`, run concurrently: name -> finished process."""
    base = {k: v for k, v in os.environ.items() if k not in LOG_SETTINGS}
    base["PYTHONPATH"] = str(REPO)
    procs = {
        name: subprocess.Popen(
            [sys.executable, *args],
            env={**base, **env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in COMMANDS.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def _help_of(runs, name: str) -> str:
    run = runs[name]
    assert run.returncode == 0, f"{name} exited {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run.stdout


def _flat(text: str) -> str:
    """``text`` with every run of whitespace as one space (help text is wrapped)."""
    return " ".join(text.split())


@pytest.mark.parametrize("name", HELP_COMMANDS)
def test_help_exits_0_without_tensorflow_start_up_lines(runs, name):
    _help_of(runs, name)
    output = runs[name].stdout + runs[name].stderr
    for noise in NOISE:
        assert noise not in output, f"{name} printed {noise!r}:\n{output}"
    log_lines = [line for line in output.splitlines() if LOG_LINE.match(line)]
    assert not log_lines, f"{name} printed C++ log lines:\n{output}"


def test_a_user_log_level_of_0_is_respected(runs):
    run = runs["convert --help, TF_CPP_MIN_LOG_LEVEL=0"]
    assert run.returncode == 0, run.stderr
    if not any(noise in run.stderr for noise in NOISE):
        pytest.skip("this TensorFlow build prints no start-up lines")
    assert "usage: python -m keras_nfnet.convert" in run.stdout


@pytest.mark.parametrize("name", ["train --help", "train --helpfull"])
def test_train_help_lists_the_registered_experiments(runs, name):
    from training.configs import registered_experiments

    text = _flat(_help_of(runs, name))
    names = registered_experiments()
    assert {"digits_nfnet", "nfnet_f0_imagenet", "nfnet_finetune"} <= set(names)
    assert f"Registered experiment name, one of: {', '.join(names)}." in text
    if name.endswith("--helpfull"):
        assert "absl.app:" in text and "--[no]helpfull" in text


def _option_blocks(help_text: str) -> dict[str, str]:
    """argparse's ``options:`` section as {first option string: its description, flattened}."""
    section = help_text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    blocks: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("  -"):  # "  --flag METAVAR  description" or just "  --flag METAVAR"
            invocation, _, description = line.strip().partition("  ")
            flag = invocation.split()[0].rstrip(",")
            blocks[flag] = description
        else:
            blocks[flag] += " " + line
    return {flag: _flat(text) for flag, text in blocks.items()}


EVAL_DEFAULTS = {
    "--variant": "F0",
    "--weights": "imagenet",
    "--data_dir": "TFDS's, $TFDS_DATA_DIR or ~/tensorflow_datasets",
    "--manual_dir": "none; the dataset must be prepared",
    "--dataset": "imagenet2012",
    "--source": "tfds",
    "--folder": "none",
    "--split": "validation",
    "--image_size": "the variant's test size, 256 for F0",
    "--batch_size": "50",
    "--numerics": "deepmind",
    "--output": "none, only print it",
}


def test_eval_help_describes_every_flag_with_its_default(runs):
    blocks = _option_blocks(_help_of(runs, "eval --help"))
    assert set(blocks) == {"-h", *EVAL_DEFAULTS}
    for flag, default in EVAL_DEFAULTS.items():
        description, _, shown = blocks[flag].rpartition(" (default: ")
        assert len(description.split()) >= 2, f"{flag} has no description: {blocks[flag]!r}"
        assert shown == f"{default})", f"{flag}: {blocks[flag]!r}"
    for variant in ("F0", "F7", "F0+", "F7+"):
        assert variant in blocks["--variant"]


def test_eval_help_is_plain_text(runs):
    text = _help_of(runs, "eval --help")
    assert "`" not in text  # ``literal``, `reference`, :func:`x`
    assert not re.search(r":[a-z]+:", text), text  # an RST role such as :func:
    assert not re.search(r"::\s*$", text, re.MULTILINE), text  # an RST literal-block marker
    assert "python -m training.eval --variant F0 --weights imagenet --data_dir DIR" in text
    assert "ILSVRC2012_img_val.tar" in text  # the description's paragraphs are kept


def test_analysis_help_lists_the_model_names(runs):
    from keras_nfnet.models import NF_REGNET_VARIANTS, NF_RESNET_VARIANTS, NFNET_VARIANTS

    text = _help_of(runs, "analysis --help")
    for pattern in (
        "nf_resnet{D}[_se]",
        "nf_regnet_{B}",
        "resnet{D}v2_bn[_se]",
        "resnet{D}v2_plain[_se]",
        "skipinit_resnet{D}",
        "nfnet_{F}[+]",
        "linear{N}_plain",
        "linear{N}_bn",
    ):
        assert f"\n  {pattern} " in text, pattern
    legend = _flat(text.split("linear{N}_bn", 1)[1])
    names = [*NF_RESNET_VARIANTS, *NF_REGNET_VARIANTS, *(n for n in NFNET_VARIANTS if "+" not in n)]
    for name in names:  # every depth, RegNet and NFNet the patterns stand for
        assert re.search(rf"\b{re.escape(name.lower())}\b", legend), (name, legend)
    blocks = _option_blocks(text)
    assert "(default: 224)" in blocks["--image_size"] and "(default: 8)" in blocks["--batch_size"]


def test_filtered_stderr_drops_only_the_lines_it_is_told_to(capfd):
    lines = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        b"I0000 00:00:1796225752.706014    3399 port.cc:153] oneDNN custom operations are on.\n",
        b"W0000 00:00:1796225752.706014    3399 x.cc:1] a warning\n",
        b"a Python warning\n",
        b"F0000 00:00:1796225752.706014    3399 x.cc:2] Check failed\n",
    ]
    with filtered_stderr(lambda line: is_startup_noise(line, 1)):
        for line in lines:
            os.write(2, line)
    err = capfd.readouterr().err
    assert err.splitlines() == [line.decode().rstrip() for line in lines[2:]]


def test_analysis_unknown_model_is_one_error_line_before_anything_is_built(capsys, tmp_path):
    from keras_nfnet.analysis.__main__ import cli

    out = tmp_path / "spp.png"
    assert cli(["--models=nf_resnet50,nf_resnet51x", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Unknown model name 'nf_resnet51x'")
    assert "nf_resnet{D}[_se]" in err[0] and "Traceback" not in err[0]
    assert not out.exists()
