"""The `make demo` path on tiny data: train -> export -> serve -> classify over gRPC -> SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import ROOT


@pytest.mark.slow
def test_demo_pipeline_on_tiny_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--epochs", "1", "--limit", "256", "--workdir", str(tmp_path),
         "--show", "4"],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for name in ("mnist_cnn", "lenet5"):
        assert f"{name}: held-out accuracy" in out
        folder = tmp_path / "models" / name
        assert (folder / "config.pbtxt").is_file() and (folder / "1" / "model.onnx").is_file()
        meta = json.loads((folder / "1" / "metadata.json").read_text())
        assert meta["parity"]["top1_agreement"] == 1.0 and meta["parity"]["max_abs_diff"] <= 1e-4
    assert "digit_0_label_" in out  # the `cnnserve classify` command printed its answers
    assert "server exited with status 0" in out and "explainer exited with status 0" in out
    overlays = list((tmp_path / "out" / "explain").rglob("overlay.png"))
    assert len(overlays) == 1 and overlays[0].stat().st_size > 0
    assert list((tmp_path / "out" / "explain").rglob("heatmap.npy"))
