"""`plot_signal_propagation` and ``python -m keras_nfnet.analysis`` (§12)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_python

from keras_nfnet.analysis import STATISTICS, plot_signal_propagation
from keras_nfnet.analysis.__main__ import build_model, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = ("nf_resnet50", "resnet50v2_bn", "resnet50v2_plain")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spp") / "spp.png"
    data = out.with_suffix(".npz")
    argv = ["--models", ",".join(MODELS), "--out", str(out), "--data", str(data)]
    results, fig = main([*argv, "--image_size", "64", "--batch_size", "4"])
    return out, data, results, fig


def test_cli_writes_a_png_and_the_data_behind_it(cli_run):
    out, data, results, _ = cli_run
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 20_000
    with np.load(data) as saved:
        for label in MODELS:
            for statistic in STATISTICS:
                np.testing.assert_array_equal(
                    saved[f"{label}/{statistic}"], results[label][statistic]
                )


def test_each_panel_overlays_every_model(cli_run):
    _, _, results, fig = cli_run
    assert len(fig.axes) == len(STATISTICS)
    for ax, statistic in zip(fig.axes, STATISTICS):
        assert [line.get_label() for line in ax.lines] == list(MODELS)
        assert ax.get_xlabel() == "residual block (0 = stem output)"
        assert ax.get_ylabel()  # a readable name, not the dict key
        for line, label in zip(ax.lines, MODELS):
            np.testing.assert_array_equal(line.get_ydata(), results[label][statistic])
        x = ax.lines[0].get_xdata()
        assert x[0] == (1 if statistic == "res_avg_var" else 0) and len(x) == (
            16 if statistic == "res_avg_var" else 17
        )
    # The unnormalized network spans orders of magnitude: the variance panel is logarithmic.
    assert fig.axes[1].get_yscale() == "log"


def test_panels_show_the_expected_curves(cli_run):
    _, _, results, _ = cli_run
    nf, bn, plain = (results[m] for m in MODELS)
    # NF-ResNet with skip gains at 1: the skip path stays near 1 + k alpha^2, without mean shift.
    assert np.all((nf["avg_var"][1:] > 0.6) & (nf["avg_var"][1:] < 1.4))
    assert nf["avg_sq_mean"][1:].max() < 0.1
    # BN: linear growth inside a stage, reset at each transition (stage 1 starts at block 3).
    assert np.all(np.diff(bn["avg_var"][1:4]) > 0) and bn["avg_var"][4] < bn["avg_var"][3]
    # Unnormalized: exponential growth, far above both.
    assert plain["avg_var"][-1] > 1000 * max(bn["avg_var"].max(), nf["avg_var"].max())


def test_python_dash_m_entry_point(tmp_path):
    out = tmp_path / "linear.png"
    proc = run_python(
        [
            "-m",
            "keras_nfnet.analysis",
            "--models",
            "linear8_plain,linear8_bn",
            "--out",
            str(out),
            "--batch_size",
            "8",
            "--image_size",
            "32",
        ]
    )
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "linear8_bn: 8 blocks" in proc.stdout


def test_unknown_model_names_and_incomplete_results_are_refused():
    with pytest.raises(ValueError, match="'resnet50'"):
        build_model("resnet50", image_size=64)
    with pytest.raises(ValueError, match="lacks \\['res_avg_var'\\]"):
        plot_signal_propagation({"m": {"avg_sq_mean": np.zeros(2), "avg_var": np.ones(2)}})
