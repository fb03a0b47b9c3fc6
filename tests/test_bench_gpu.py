"""bench/gpu.sh, the accelerator benchmark, works end to end in its CPU dry-run mode.

No GPU is needed and nothing is timed against a limit: the dry run builds ``test_nfnet`` at
64 px in both engines (Keras on JAX under ``mixed_bfloat16`` with XLA; timm in bfloat16 autocast
and ``channels_last``), refuses batch 8 as if the device ran out of memory, so the batch search
must fall back to batch 4, and writes the JSON report and the README row a GPU run writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_script_dry_run_writes_the_report_of_a_real_run(tmp_path):
    report_path = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env.pop("KERAS_BACKEND", None)  # each worker sets its own backend
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), "--dry-run", "--json", str(report_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["dry_run"] is True
    assert report["models"] == ["test_nfnet"]
    assert report["settings"]["train_batches"] == [8, 4]
    assert report["settings"]["torch_compile"] is False
    row = report["rows"]["test_nfnet"]
    for engine in ("keras", "timm"):
        result = row[engine]
        assert result["input"] == "64x64x3"
        # The batch search: 8 refused as out of memory, 4 taken and timed.
        assert [t["batch"] for t in result["train"]["tried"]] == [8, 4]
        assert [t["fits"] for t in result["train"]["tried"]] == [False, True]
        assert result["train"]["batch"] == 4 and result["infer"]["batch"] == 4
        for task in ("train", "infer"):
            median = result[task]["median_step_s"]
            assert median > 0
            assert abs(result[task]["images_per_s"] - 4 / median) <= 0.05 + 1e-3 * 4 / median
    assert row["keras"]["settings"]["policy"] == "mixed_bfloat16"
    assert row["keras"]["settings"]["xla"] is True
    assert row["timm"]["settings"]["amp"] == "bfloat16"
    assert row["timm"]["settings"]["channels_last"] is True
    for task in ("train", "infer"):
        expected = row["keras"][task]["images_per_s"] / row["timm"][task]["images_per_s"]
        assert abs(row["ratio_keras_over_timm"][task] - expected) <= 0.01 * expected
    # The README row a GPU run prints (--markdown).
    assert "| cpu | test_nfnet | " in proc.stdout
