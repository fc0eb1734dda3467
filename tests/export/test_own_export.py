"""`cnnserve export --keras/--onnx`: bad input gets a clear error and installs nothing; the ONNX prefix is exact.

The full path (export -> serve -> tritonclient -> Classify -> heatmap) is tests/compat/test_own_models.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.export.onnx_model import export_onnx
from cnnserve.export.own_model import ExportInputError, Preprocessing
from support import pytorch_style_onnx

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def nothing_installed(tmp_path) -> bool:
    """No model folder and no staging folder left behind."""
    repo = tmp_path / "models"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".cnnserve-export-")]
    return not leftovers and (not repo.exists() or not any(repo.iterdir()))


def dense_onnx(path):
    """A valid ONNX classifier whose input is a feature vector, not an image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["scores"])],
        "dense",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 10])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.ones((10, 3), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_cli_keeps_variant_and_adds_own_model_options():
    from cnnserve.export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "--onnx", "m.onnx", "--name", "m", "--mean", "0.5,0.5,0.5", "--bgr"])
    assert (args.variant, str(args.onnx), args.model_name, args.mean, args.bgr) == (
        None,
        "m.onnx",
        "m",
        "0.5,0.5,0.5",
        True,
    )
    assert args.keras is None and args.scale is None and args.max_batch_size == 32
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--onnx", "a.onnx", "--keras", "b.keras", "--name", "m"])


@pytest.mark.parametrize(
    "make, options, fragment",
    [
        (lambda p: p.write_text("not a model"), {}, "is not an ONNX model"),
        (dense_onnx, {}, "not an image tensor [N, C, H, W] or [N, H, W, C]"),
        (pytorch_style_onnx, {"labels": "two"}, "holds 2 labels; the model has 5 classes"),
        (pytorch_style_onnx, {"mean": "0.5,0.5"}, "--mean has 2 values; the model's input has 3 channel(s)"),
        (pytorch_style_onnx, {"std": "1,0,1"}, "--std must not contain 0"),
        (pytorch_style_onnx, {"mean": "a,b,c"}, "--mean takes comma-separated numbers"),
        (pytorch_style_onnx, {"layout": "NHWC"}, "an image tensor needs fixed H and W and 1 or 3 channels"),
        (pytorch_style_onnx, {"name": "../up"}, "invalid model name"),
    ],
    ids=["not-onnx", "not-image", "labels", "mean-length", "std-zero", "mean-text", "layout", "name"],
)
def test_bad_onnx_input_is_refused_and_installs_nothing(tmp_path, make, options, fragment):
    source = tmp_path / "model.onnx"
    make(source)
    if options.get("labels"):
        (tmp_path / "two.txt").write_text("a\nb\n")
        options = {**options, "labels": tmp_path / "two.txt"}
    kwargs = {"name": "mine", **options}
    with pytest.raises(ExportInputError) as err:
        export_onnx(source, repository=tmp_path / "models", **kwargs)
    assert fragment in str(err.value)
    assert nothing_installed(tmp_path)


def test_cli_reports_the_error_and_installs_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = subprocess.run(
        [sys.executable, "-m", "cnnserve.cli", "export", "--onnx", str(tmp_path / "notes.txt"), "--name", "m",
         "--model-repository", str(tmp_path / "models")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "export failed, nothing installed" in proc.stderr
    assert "is not an ONNX model" in proc.stderr and nothing_installed(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "cnnserve.cli", "export", "--onnx", str(tmp_path / "notes.txt")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "--name NAME is required" in proc.stderr


def test_onnx_prefix_reproduces_the_numpy_preprocessing(tmp_path):
    """uint8 NHWC -> BGR swap -> (x * scale - mean) / std -> NCHW, then the model: exact to float rounding."""
    source = tmp_path / "pt.onnx"
    pytorch_style_onnx(source)
    vdir = export_onnx(
        source, "caffe", repository=tmp_path / "models", scale=1.0, mean="103.9,116.8,123.7", std="57,58,59", bgr=True
    )
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    served = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    fed = (x[..., ::-1].astype(np.float32) - np.float32([103.9, 116.8, 123.7])) / np.float32([57, 58, 59])
    expected = original.run(None, {"input.1": np.ascontiguousarray(fed.transpose(0, 3, 1, 2))})[0]
    np.testing.assert_allclose(served.run(None, {"images": x})[0], expected, rtol=1e-5, atol=1e-5)
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["preprocessing"]["bgr"] is True and meta["preprocessing"]["std"] == [57.0, 58.0, 59.0]
    assert meta["output"]["name"] == "logits" and (vdir.parent / "labels.txt").read_text().startswith("class_0\n")


def test_preprocessing_defaults_say_what_they_assume():
    pre = Preprocessing.from_options(None, None, None, False)
    assert pre.scale == pytest.approx(1 / 255) and pre.defaults == ("scale", "mean", "std")
    assert pre.as_metadata(3)["mean"] == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------ --keras (TensorFlow)


@pytest.mark.slow
def test_bad_keras_input_is_refused_and_installs_nothing(tmp_path):
    import keras
    from keras import layers

    from cnnserve.export.keras_model import export_keras

    (tmp_path / "not.keras").write_text("hello")
    vector = keras.Sequential([keras.Input((10,)), layers.Dense(3, activation="softmax")])
    vector.save(tmp_path / "vector.keras")
    image = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(3)])
    image.save(tmp_path / "image.keras")
    softmaxed = keras.Sequential([keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    softmaxed.save(tmp_path / "softmaxed.keras")
    (tmp_path / "two.txt").write_text("a\nb\n")
    cases = [
        ("not.keras", {}, "is not a Keras model"),
        ("absent.keras", {}, "no such file or directory"),
        ("vector.keras", {}, "not an image tensor [N, H, W, C]"),
        ("image.keras", {"labels": tmp_path / "two.txt"}, "holds 2 labels; the model has 3 classes"),
        ("image.keras", {"mean": "1,2"}, "--mean has 2 values; the model's input has 3 channel(s)"),
        ("image.keras", {"samples": tmp_path / "two.txt"}, "not a folder of PNG/JPEG images nor a .npy"),
        ("softmaxed.keras", {"softmax": True}, "already ends in a softmax"),
        ("softmaxed.keras", {"bgr": True}, "--bgr swaps 3 colour channels"),
    ]
    for path, options, fragment in cases:
        with pytest.raises(ExportInputError) as err:
            export_keras(tmp_path / path, "mine", repository=tmp_path / "models", **options)
        assert fragment in str(err.value), (path, options)
        assert nothing_installed(tmp_path)


@pytest.mark.slow
def test_keras_export_scores_the_heatmaps_on_the_given_samples_only(tmp_path):
    """`--keras` goes through the same explainable-version step as the variants: scores on the user's --samples
    (never the generated top-up images), the defaults they choose, the explainer serving them."""
    from cnnserve.explainer.models import ModelTable
    from cnnserve.export.keras_model import export_keras
    from support import DIGITS, tiny_digit_model

    plain = tiny_digit_model(seed=3)  # uint8 input, softmax: the served kind
    plain.save(tmp_path / "digits.keras")
    np.save(tmp_path / "digits.npy", np.load(DIGITS)["x"][:12])
    vdir = export_keras(
        tmp_path / "digits.keras", "mine", repository=tmp_path / "models", samples=tmp_path / "digits.npy",
        faithfulness_samples=10,
    )  # fmt: skip
    meta = json.loads((vdir / "metadata.json").read_text())
    scored = meta["faithfulness"]
    assert scored["samples"] == 10 and "--samples" in scored["source"] and scored["mask"] == ""
    assert {s["layer"] for s in scored["scores"]} == {"conv2", "conv1"} and len(scored["scores"]) == 8
    assert not any("pointing_game" in s for s in scored["scores"])  # no mask for a model we know nothing of
    table = ModelTable(tmp_path / "models")
    table.load_all()
    served = table.get("mine")
    if scored["default"]:
        assert (served.default_layer, served.default_method) == (
            scored["default"]["layer"],
            scored["default"]["method"],
        )
    else:
        assert (served.default_layer, served.default_method) == (meta["layers"]["cam"], "gradcam")
    # No --samples: only generated images, nothing to score on.
    again = export_keras(tmp_path / "digits.keras", "other", repository=tmp_path / "models")
    assert "faithfulness" not in json.loads((again / "metadata.json").read_text())
