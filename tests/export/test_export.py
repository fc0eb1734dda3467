"""Tests for cnnserve.export: Triton config text, and a real train -> ONNX -> repository round trip."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from google.protobuf import text_format

from cnnserve._proto.inference import model_config_pb2
from cnnserve.export.triton_config import ModelConfig, TensorConfig, render_config
from cnnserve.training.data import DEFAULT_DATA, load_mnist, split_dataset
from cnnserve.training.registry import VARIANTS

EXPECTED_MNIST_CONFIG = """\
name: "mnist_cnn"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  {
    name: "images"
    data_type: TYPE_UINT8
    format: FORMAT_NHWC
    dims: [ 28, 28, 1 ]
  }
]
output [
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 10 ]
    label_filename: "labels.txt"
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 2000
}
instance_group [
  {
    count: 1
    kind: KIND_CPU
  }
]
parameters {
  key: "intra_op_thread_count"
  value: { string_value: "1" }
}
"""


def parse_config(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


# ------------------------------------------------------------------ config.pbtxt (no TensorFlow)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_triton_config_for_every_variant_parses_as_a_model_config(name):
    from cnnserve.export.exporter import triton_config

    v = VARIANTS[name]
    cfg = parse_config(render_config(triton_config(v, name)))
    assert cfg.name == name and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == v.max_batch_size
    (inp,) = cfg.input
    assert inp.name == "images" and list(inp.dims) == list(v.input_shape)
    assert inp.data_type == model_config_pb2.TYPE_UINT8 and inp.format == model_config_pb2.ModelInput.FORMAT_NHWC
    (out,) = cfg.output
    assert out.name == "probabilities" and list(out.dims) == [v.num_classes]
    assert out.data_type == model_config_pb2.TYPE_FP32 and out.label_filename == "labels.txt"
    assert cfg.dynamic_batching.max_queue_delay_microseconds == v.max_queue_delay_microseconds
    assert list(cfg.dynamic_batching.preferred_batch_size) == (
        [v.preferred_batch_size] if v.preferred_batch_size else []
    )
    assert cfg.instance_group[0].count == 1
    threads = cfg.parameters["intra_op_thread_count"].string_value if "intra_op_thread_count" in cfg.parameters else ""
    assert threads == (str(v.intra_op_threads) if v.intra_op_threads else "")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_mnist_cnn_config_text_is_exactly_the_documented_one():
    from cnnserve.export.exporter import triton_config

    assert render_config(triton_config(VARIANTS["mnist_cnn"], "mnist_cnn")) == EXPECTED_MNIST_CONFIG


def test_config_quotes_names_and_rejects_unknown_dtypes():
    cfg = ModelConfig(
        name='odd "name"',
        inputs=(TensorConfig("in", "float32", (-1, 3)),),
        outputs=(TensorConfig("out", "int64", (1,)),),
        max_batch_size=0,
        max_queue_delay_microseconds=100,
    )
    parsed = parse_config(render_config(cfg))
    assert parsed.name == 'odd "name"' and list(parsed.input[0].dims) == [-1, 3]
    assert not parsed.HasField("dynamic_batching")  # no batching when max_batch_size is 0
    with pytest.raises(ValueError, match="complex64"):
        render_config(
            ModelConfig(
                "m", (TensorConfig("in", "complex64", (1,)),), (), max_batch_size=0, max_queue_delay_microseconds=0
            )
        )


def test_export_cli_defaults():
    from cnnserve.export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "mnist_cnn"])
    assert (args.variant, args.version, args.opset, args.parity_samples) == ("mnist_cnn", 1, 18, None)
    assert str(args.artifacts) == "artifacts" and str(args.repository) == "models"
    assert args.data_path is None  # the data path recorded in the training metadata


# ------------------------------------------------------------------ real round trip (TensorFlow)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mnist_cnn trained for one epoch on 512 digits (accurate enough for clear top-1 margins)."""
    from cnnserve.training.train import train_variant

    out = tmp_path_factory.mktemp("artifacts")
    train_variant("mnist_cnn", epochs=1, seed=0, output_dir=out, limit=512, verbose=0)
    return out


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from cnnserve.export.exporter import export_variant

    repo = tmp_path_factory.mktemp("repo") / "models"
    vdir = export_variant("mnist_cnn", artifacts=trained, repository=repo, version=1)
    return repo, vdir


@pytest.mark.slow
def test_export_writes_the_triton_layout(exported):
    repo, vdir = exported
    model_dir = repo / "mnist_cnn"
    assert vdir == model_dir / "1"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    assert sorted(p.name for p in vdir.iterdir()) == [
        "metadata.json",
        "model.keras",
        "model.onnx",
        "model.savedmodel",
    ]
    assert (vdir / "model.savedmodel" / "saved_model.pb").exists()
    assert (model_dir / "config.pbtxt").read_text() == EXPECTED_MNIST_CONFIG
    assert (model_dir / "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".cnnserve-export")]


@pytest.mark.slow
def test_export_metadata_has_the_documented_keys_and_real_parity(exported):
    from cnnserve.training.data import file_sha256

    _, vdir = exported
    meta = json.loads((vdir / "metadata.json").read_text())
    assert {
        "schema_version", "name", "variant", "version", "input", "output", "labels",
        "preprocessing", "layers", "metrics", "parity", "hashes", "export",
    } <= set(meta)  # fmt: skip
    assert (meta["schema_version"], meta["name"], meta["variant"], meta["version"]) == (1, "mnist_cnn", "mnist_cnn", 1)
    assert meta["input"] == {"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1], "layout": "NHWC"}
    assert meta["output"] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
    assert meta["labels"] == [str(i) for i in range(10)]
    pre = meta["preprocessing"]
    assert (pre["height"], pre["width"], pre["channels"]) == (28, 28, 1)
    assert pre["color_mode"] == "grayscale" and pre["value_range"] == [0, 255] and pre["in_graph"] == "x / 255.0"
    assert pre["resize"] == "bilinear" and "invert" in pre["invert_hint"]
    assert meta["layers"]["last_conv"] == "conv2" and meta["layers"]["conv"] == ["conv1", "conv2"]
    assert meta["metrics"]["heldout"]["count"] == 1000
    parity = meta["parity"]
    assert parity["samples"] == 1000  # every held-out digit
    assert parity["top1_agreement"] == 1.0 and 0.0 <= parity["max_abs_diff"] <= 1e-4
    assert meta["export"]["opset"] == 18 and meta["export"]["tf2onnx"] == "1.17.0"
    assert meta["hashes"]["onnx_sha256"] == file_sha256(vdir / "model.onnx")
    assert meta["hashes"]["data_sha256"] == file_sha256(DEFAULT_DATA)
    # The heatmaps scored for faithfulness on the first 64 parity samples (held-out digits: ink masks).
    scored = meta["faithfulness"]
    assert scored["samples"] == 64 and "64 held-out" in scored["source"] and scored["mask"].startswith("ink")
    assert {(s["layer"], s["method"]) for s in scored["scores"]} == {
        (layer, method) for layer in ("conv2", "conv1") for method in ("gradcam", "grad_x_activation",
                                                                       "gradcam_plus_plus", "score_cam")
    }  # fmt: skip
    for s in scored["scores"]:
        assert 0 <= s["deletion_auc"] <= 1 and 0 <= s["insertion_auc"] <= 1 and 0 <= s["pointing_game"] <= 1
        assert s["passes_randomisation"] == (s["randomisation_correlation"] < 0.5)
    if scored["default"] is not None:
        best = max((s for s in scored["scores"] if s["passes_randomisation"]), key=lambda s: s["score"])
        assert scored["default"] == {k: best[k] for k in ("layer", "method", "score")}


@pytest.mark.slow
def test_onnx_model_has_dynamic_batch_and_matches_the_savedmodel(exported):
    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    _, vdir = exported
    model = onnx.load(str(vdir / "model.onnx"))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.name == "probabilities" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [28, 28, 1]

    data = load_mnist(DEFAULT_DATA)
    x = data.x[split_dataset(data).heldout[:5]]
    session = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    loaded = tf.saved_model.load(str(vdir / "model.savedmodel"))
    tf_probs = loaded.signatures["serving_default"](images=tf.constant(x))["probabilities"].numpy()
    for batch in (x[:1], x):
        (probs,) = session.run(["probabilities"], {"images": batch})
        assert probs.shape == (len(batch), 10) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, tf_probs[: len(batch)], atol=1e-5)


@pytest.mark.slow
def test_second_version_leaves_the_first_in_place(trained, tmp_path):
    from cnnserve.export.exporter import export_variant

    repo = tmp_path / "models"
    export_variant("mnist_cnn", artifacts=trained, repository=repo, version=1, parity_samples=256)
    v2 = export_variant("mnist_cnn", artifacts=trained, repository=repo, version=2, parity_samples=256)
    assert sorted(p.name for p in (repo / "mnist_cnn").iterdir()) == ["1", "2", "config.pbtxt", "labels.txt"]
    assert json.loads((v2 / "metadata.json").read_text())["parity"]["samples"] == 256


@pytest.mark.slow
def test_broken_onnx_model_fails_parity_and_writes_nothing(trained, tmp_path, monkeypatch):
    """A conversion that silently changes a weight must be caught by the real parity check."""
    import onnx.numpy_helper

    from cnnserve.export import exporter, onnx_convert
    from cnnserve.export.parity import ParityError

    real_convert = onnx_convert.savedmodel_to_onnx

    def convert_with_a_wrong_bias(*args, **kwargs):
        model = real_convert(*args, **kwargs)
        # Shift the largest 1-D initializer (a bias) slightly: a plausible, silent conversion bug.
        init = max((i for i in model.graph.initializer if len(i.dims) == 1), key=lambda i: i.dims[0])
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + 0.05, init.name))
        return model

    monkeypatch.setattr(onnx_convert, "savedmodel_to_onnx", convert_with_a_wrong_bias)
    repo = tmp_path / "models"
    with pytest.raises(ParityError, match=r"parity failed on 1000 held-out samples.*max \|dprob\|"):
        exporter.export_variant("mnist_cnn", artifacts=trained, repository=repo, version=1)
    assert not (repo / "mnist_cnn").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cnnserve-export")]


@pytest.mark.slow
def test_export_refuses_a_different_data_file(trained, tmp_path):
    from cnnserve.export.exporter import ExportError, export_variant

    other = tmp_path / "other.npz"
    data = load_mnist(DEFAULT_DATA)
    np.savez(other, x=data.x[:, :, :, 0][::-1], y=data.y[::-1])
    with pytest.raises(ExportError, match="not the file"):
        export_variant("mnist_cnn", artifacts=trained, repository=tmp_path / "models", data_path=other)
    assert not (tmp_path / "models").exists()


def test_config_writes_preferred_batch_size_and_threads_as_triton_reads_them():
    cfg = ModelConfig(
        name="m",
        inputs=(TensorConfig("images", "uint8", (28, 28, 1)),),
        outputs=(TensorConfig("probabilities", "float32", (10,)),),
        max_batch_size=64,
        max_queue_delay_microseconds=2000,
        preferred_batch_size=16,
        intra_op_threads=2,
    )
    parsed = parse_config(render_config(cfg))
    assert list(parsed.dynamic_batching.preferred_batch_size) == [16]
    assert parsed.parameters["intra_op_thread_count"].string_value == "2"
