"""The whole registry, end to end: smoke train -> export (ONNX parity) -> serve -> classify.

Every variant trains a few steps on generated data at its smoke input size (``--smoke``), is exported
with the parity check (top-1 100 %, max |dprob| <= 1e-4 on 256 held-out samples), served by a real
server on a temporary repository and asked to classify PNG images and raw tensors. The server's answer
must be the ONNX model's own and the TensorFlow model's top-1 class.

VGG-sized variants (``Variant.heavy``: VGG16, VGG19, AlexNet; hundreds of MB of ONNX, GBs to convert) and
the two deep keras.applications graphs (minutes each) run only with ``-m heavy``; their models are still
built and checked (contract, parameter count, last conv and Grad-CAM layers) by tests/test_training.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnserve.training.architectures import INPUT_NAME, OUTPUT_NAME
from cnnserve.training.registry import VARIANTS
from support import ServerThread, png_bytes

# Inception v3 and ResNet50 run at small smoke inputs, but their graphs (94 and 53 convolutions) take 4-7
# minutes each to trace, save, convert and check on two busy cores: they run with the heavy ones.
SLOW_GRAPHS = {"inception_v3", "resnet50"}
LIGHT = sorted(n for n, v in VARIANTS.items() if not v.heavy and n not in SLOW_GRAPHS)
HEAVY = sorted(set(VARIANTS) - set(LIGHT))


def _cli(*args: str) -> None:
    """One `cnnserve` command in its own process: its memory is returned when it ends."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "cnnserve.cli", *args], check=True)


def _smoke_pipeline(name: str, tmp_path, in_processes: bool = False):
    from cnnserve.client import CnnserveClient
    from cnnserve.export.exporter import export_variant
    from cnnserve.training.data import SMOKE_DATA, load_dataset, split_dataset
    from cnnserve.training.train import predict_savedmodel, train_variant

    v = VARIANTS[name]
    shape = tuple(v.smoke_input_shape or v.input_shape)
    repo = tmp_path / "models"
    if in_processes:  # VGG-sized: training, then the conversion (12.5 GB), never held in one process
        _cli("train", name, "--smoke", "--output-dir", str(tmp_path / "artifacts"))
        _cli("export", name, "--artifacts", str(tmp_path / "artifacts"), "--model-repository", str(repo))
    else:
        train_variant(name, smoke=True, output_dir=tmp_path / "artifacts", verbose=0)
    art = tmp_path / "artifacts" / name
    meta = json.loads((art / "train_metadata.json").read_text())
    assert meta["smoke"] is True and meta["input"]["shape"] == [-1, *shape]
    assert meta["layers"]["last_conv"] == v.last_conv_layer and v.last_conv_layer in meta["layers"]["conv"]
    # The default Grad-CAM layer is recorded too, and is a spatial layer of the trained model.
    assert meta["layers"]["cam"] == v.heatmap_layer
    shapes = {row["name"]: row["output_shape"] for row in meta["layers"]["all"]}
    assert len(shapes[v.heatmap_layer]) == 4

    vdir = repo / name / "1"
    if not in_processes:
        vdir = export_variant(name, artifacts=tmp_path / "artifacts", repository=repo)
        # Version 2: the fp16 variant of the same training, checked against the fp32 ONNX model.
        export_variant(name, artifacts=tmp_path / "artifacts", repository=repo, version=2, fp16=True)
    served = json.loads((vdir / "metadata.json").read_text())
    assert served["layers"]["cam"] == v.heatmap_layer  # the explainer's default heatmap layer
    parity = served["parity"]
    assert parity["samples"] >= 256 and parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] <= 1e-4
    assert served["output"]["shape"] == [-1, v.num_classes] and len(served["labels"]) == v.num_classes
    assert (served["preprocessing"]["height"], served["preprocessing"]["width"]) == shape[:2]
    assert (repo / name / "labels.txt").read_text().splitlines() == list(v.labels)

    data = load_dataset(v.dataset, SMOKE_DATA, input_shape=shape, labels=v.labels)
    held = split_dataset(data).heldout[:4]
    x = data.x[held]
    tf_probs = predict_savedmodel(vdir / "model.savedmodel", x)

    fp16 = (repo / name / "2").is_dir()
    if fp16:
        (repo / name / "config.pbtxt").write_text(
            (repo / name / "config.pbtxt").read_text() + "version_policy { all { } }\n"
        )
    server = ServerThread(repo).start()
    try:
        with CnnserveClient(server.address) as client:
            probs = client.infer(name, {INPUT_NAME: x}, version="1")[OUTPUT_NAME]
            images = [png_bytes(img[..., 0] if img.shape[-1] == 1 else img) for img in x]
            response = client.classify(name, images, top_k=1, version="1")
            probs16 = client.infer(name, {INPUT_NAME: x}, version="2")[OUTPUT_NAME] if fp16 else None
    finally:
        server.stop()
    if fp16:
        _check_fp16(repo / name / "2", probs, probs16)
    assert probs.shape == (len(x), v.num_classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, tf_probs, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(1), tf_probs.argmax(1))
    # PNG in, server-side decode: the images already have the model's size, so the same classes come back.
    top = [r.predictions[0] for r in response.results]
    assert [p.index for p in top] == probs.argmax(1).tolist()
    assert [p.label for p in top] == [v.labels[i] for i in probs.argmax(1)]
    return served


def _check_fp16(vdir, probs, probs16) -> None:
    """The fp16 version: recorded as such, its own parity passed, float32 out, and served within its tolerance."""
    import onnx

    from cnnserve.repository import FP16_MAX_ABS_DIFF

    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["precision"] == "fp16" and meta["parity"]["max_abs_diff"] <= 1e-4  # fp32 vs TensorFlow, as ever
    p16 = meta["parity_fp16"]
    assert p16["samples"] >= 256 and p16["decisive_top1_agreement"] == 1.0
    assert p16["max_abs_diff"] <= p16["tolerance"] == FP16_MAX_ABS_DIFF
    graph = onnx.load(str(vdir / "model.onnx")).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.UINT8]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)  # the weights are half
    assert probs16.dtype == np.float32
    np.testing.assert_allclose(probs16, probs, atol=FP16_MAX_ABS_DIFF)


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT)
def test_smoke_train_export_serve_classify(name, tmp_path):
    served = _smoke_pipeline(name, tmp_path)
    assert served["training"]["params"] > 0


@pytest.mark.heavy
@pytest.mark.parametrize("name", HEAVY)
def test_heavy_smoke_train_export_serve_classify(name, tmp_path):
    served = _smoke_pipeline(name, tmp_path, in_processes=VARIANTS[name].heavy)
    if VARIANTS[name].smoke_input_shape is None:
        assert served["training"]["params"] == VARIANTS[name].params  # full size: no smaller smoke input


def test_heavy_and_light_cover_the_registry():
    assert sorted(LIGHT + HEAVY) == sorted(VARIANTS)
    assert {"vgg16", "vgg19"} <= set(HEAVY)


@pytest.mark.slow
def test_mirrored_strategy_trains_and_evaluate_reports_onnx_next_to_tensorflow(tmp_path, capsys):
    """`--distribute mirrored` on this machine's one CPU device, then `cnnserve evaluate` on the result,
    locally (onnxruntime) and through a running server."""
    from cnnserve.cli import main
    from cnnserve.export.exporter import export_variant
    from cnnserve.training.evaluate import evaluate_served
    from cnnserve.training.train import train_variant

    art = train_variant(
        "digits_bn", smoke=True, epochs=2, output_dir=tmp_path / "art", distribute="mirrored", verbose=0
    )
    meta = json.loads((art / "train_metadata.json").read_text())
    assert meta["training"]["distribute"] == {"strategy": "mirrored", "replicas": 1}
    repo = tmp_path / "models"
    export_variant("digits_bn", artifacts=tmp_path / "art", repository=repo)

    local = evaluate_served("digits_bn", repository=repo)
    assert local["samples"] == 256 and local["top1_agreement"] == 1.0
    assert local["onnx_accuracy"] == local["tf_accuracy"] == pytest.approx(meta["metrics"]["heldout"]["accuracy"])

    server = ServerThread(repo).start()
    try:
        remote = evaluate_served("digits_bn", repository=repo, server=server.address, limit=64)
        assert main(["evaluate", "digits_bn", "--model-repository", str(repo), "--server", server.address]) == 0
    finally:
        server.stop()
    assert remote["samples"] == 64 and remote["top1_agreement"] == 1.0 and remote["max_abs_diff"] <= 1e-4
    out = capsys.readouterr().out
    assert f"server {server.address} (ONNX)" in out and "tensorflow (SavedModel)" in out


def test_multiworker_needs_tf_config(monkeypatch):
    from cnnserve.training.distribute import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multiworker")
    with pytest.raises(ValueError, match="Known: none, mirrored, multiworker"):
        make_strategy("parameter_server")


def test_variants_command_lists_every_variant_without_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, json, io, contextlib\n"
        "from cnnserve.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    main(['variants', '--json'])\n"
        "rows = [json.loads(line) for line in buf.getvalue().splitlines()]\n"
        "assert not [m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules]\n"
        "print(json.dumps(rows))\n"
    )
    rows = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert [r["name"] for r in rows] == list(VARIANTS)
    by_name = {r["name"]: r for r in rows}
    assert by_name["vgg16"]["params"] == 138_357_544 and by_name["vgg16"]["classes"] == 1000
    assert by_name["vgg16_transfer"]["classes"] == 2 and by_name["vgg16_transfer"]["weights"] == "imagenet"
    assert by_name["digits_bn"]["input"] == "8x8x1"
    assert by_name["resnet50"]["cam_layer"] == "conv5_block3_out" and by_name["lenet5"]["cam_layer"] == "conv2"
