"""benchmarks/gpu/run.sh, the GPU machine's one command, end to end on the CPU with tiny models.

The same script, the same phases (build with onnx.helper and the fp16 converter, raw onnxruntime with and
without I/O binding, `cnnserve serve` under `cnnserve bench`'s runner, the arithmetic limit), only
``--device cpu --tiny`` and short measurements, so that the minutes on a GPU go to measuring. TensorFlow is
made unimportable, as on the GPU machine's image. PyTorch is not installed here: that phase records a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import ROOT


@pytest.mark.slow
def test_the_gpu_script_runs_end_to_end_on_the_cpu(tmp_path):
    notf = tmp_path / "notf" / "tensorflow"
    notf.mkdir(parents=True)
    (notf / "__init__.py").write_text("raise ImportError('no TensorFlow on the GPU machine')\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(notf.parent))
    env.pop("OUT", None)
    command = [
        "bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--device", "cpu", "--tiny", "--seconds", "0.2",
        "--batch-sizes", "1,4", "--max-batch", "8", "--serve-levels", "1x1,4x4", "--out", str(out),
        "--work", str(tmp_path / "work"),
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "run.log", "server.log"]
    doc = json.loads((out / "results.json").read_text())
    phases = doc["phases"]
    assert not [name for name, p in phases.items() if "error" in p or "skipped" in p], phases
    built = phases["build"]["result"]["models"]
    assert set(built) == {"vgg16", "resnet50"} and all(m["onnx_mb"]["fp16"] > 0 for m in built.values())
    raw = phases["raw"]["result"]["variants"]
    assert set(raw) == {"plain", "io_binding"}
    models = {"vgg16", "vgg16_fp16", "resnet50", "resnet50_fp16"}
    for rows in raw.values():
        assert {(r["model"], r["batch_size"]) for r in rows} == {(m, b) for m in models for b in (1, 4)}
        assert all(r["images_per_s"] > 0 and r["providers"] == ["CPUExecutionProvider"] for r in rows)
    agreement = phases["raw"]["result"]["fp16_agreement"]  # the same images through fp32 and fp16
    assert set(agreement) == {"vgg16", "resnet50"}
    assert all(a["top1_agreement"] == 1.0 and a["max_abs_diff"] <= 1e-2 for a in agreement.values()), agreement
    served = phases["serve"]["result"]
    assert "--device cpu" in served["command"] and len(served["session_providers"]) == 4
    assert all("I/O binding" in line for line in served["session_providers"])
    levels = {(r["model"], r["images_per_request"], r["concurrency"]): r for r in served["levels"]}
    assert set(levels) == {(m, i, c) for m in models for i, c in ((1, 1), (4, 4))}
    for r in levels.values():
        assert r["ok"] > 0 and not r["errors"] and r["server_mean_batch_size"] >= 1
    assert phases["torch"]["result"].get("skipped") or phases["torch"]["result"]["rows"]
    assert set(phases["limit"]["result"]["images_per_s_ceiling"]) == {"vgg16", "resnet50"}
    assert doc["gpu_utilisation"]["available"] is False  # no nvidia-smi here; on the GPU machine, per phase
    table = (out / "results.md").read_text()
    assert "cnnserve serve" in table and "Raw onnxruntime" in table
