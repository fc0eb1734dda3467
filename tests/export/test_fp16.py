"""The fp16 export variant without TensorFlow: conversion, its parity rule, and what the server accepts.

The whole chain (smoke-train every light variant, `export --fp16`, serve it beside fp32) runs in
tests/e2e/test_variants.py.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
import pytest

from cnnserve.export.fp16 import compare_fp16, convert_fp16, make_fp16_variant
from cnnserve.export.parity import ParityError, onnx_session
from cnnserve.repository import FP16_MAX_ABS_DIFF, ModelConfigError, read_model, verify_integrity
from support import tiny_onnx, write_model


def test_fp16_variant_keeps_the_edges_and_halves_the_weights(tmp_path):
    tiny_onnx(tmp_path / "m.onnx")
    convert_fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx")
    graph = onnx.load(str(tmp_path / "m16.onnx")).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.UINT8]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    weights = {t.name: t.data_type for t in graph.initializer}
    assert weights["w"] == onnx.TensorProto.FLOAT16
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    producers = {o: n for n in graph.node for o in n.output}
    cast = producers[softmax.input[0]]  # Softmax stays in float32: its input is cast up
    assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    p32 = onnx_session(tmp_path / "m.onnx").run(None, {"images": images})[0]
    p16 = onnx_session(tmp_path / "m16.onnx").run(None, {"images": images})[0]
    assert p16.dtype == np.float32
    report = compare_fp16(p32, p16)
    assert report.max_abs_diff <= FP16_MAX_ABS_DIFF and report.decisive_top1_agreement == 1.0


def test_the_parity_rule_counts_close_calls_and_fails_clear_ones():
    reference = np.array([[0.50, 0.49, 0.01], [0.9, 0.05, 0.05]], np.float32)
    flipped_close = np.array([[0.49, 0.50, 0.01], [0.9, 0.05, 0.05]], np.float32)
    report = compare_fp16(reference, flipped_close)
    assert report.top1_agreement == 0.5 and report.decisive_samples == 1 and report.decisive_top1_agreement == 1.0
    flipped_clear = np.array([[0.50, 0.49, 0.01], [0.05, 0.9, 0.05]], np.float32)
    assert compare_fp16(reference, flipped_clear).decisive_top1_agreement == 0.0


def test_make_fp16_variant_replaces_the_model_only_when_it_passes(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    tiny_onnx(path)
    x = np.random.default_rng(1).integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
    fp32_bytes = path.read_bytes()
    monkeypatch.setattr("cnnserve.repository.FP16_MAX_ABS_DIFF", 0.0)  # nothing passes a zero tolerance
    with pytest.raises(ParityError, match="fp16/fp32 parity failed on 256 samples"):
        make_fp16_variant(path, x, "images", "probabilities")
    assert path.read_bytes() == fp32_bytes and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    monkeypatch.undo()
    recorded = make_fp16_variant(path, x, "images", "probabilities")
    assert recorded["precision"] == "fp16" and recorded["parity_fp16"]["samples"] == 256
    assert recorded["parity_fp16"]["provider"] == "CPUExecutionProvider"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"precision": "int8"}, "precision 'int8' is not one of"),
        ({"precision": "fp16"}, "fp16/fp32 parity failed"),  # no parity_fp16 recorded
        (
            {"precision": "fp16", "parity_fp16": {"samples": 256, "decisive_top1_agreement": 1.0, "max_abs_diff": 0.2}},
            "max \\|dprob\\| 0.2",
        ),
    ],
)
def test_the_server_refuses_an_fp16_version_without_a_passing_check(tmp_path, extra, message):
    folder = write_model(tmp_path, "m")
    meta_path = folder / "1" / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **extra}))
    (spec,) = read_model(tmp_path, "m")
    with pytest.raises(ModelConfigError, match=message):
        verify_integrity(spec)


def test_a_passing_fp16_record_is_served(tmp_path):
    folder = write_model(tmp_path, "m")
    meta_path = folder / "1" / "metadata.json"
    p16 = {"samples": 256, "decisive_samples": 200, "decisive_top1_agreement": 1.0, "max_abs_diff": 3e-4}
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "precision": "fp16", "parity_fp16": p16}))
    (spec,) = read_model(tmp_path, "m")
    verify_integrity(spec)


def test_export_cli_has_fp16_off_by_default():
    from cnnserve.export.cli import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["export", "mnist_cnn"]).fp16 is False
    assert parser.parse_args(["export", "mnist_cnn", "--fp16"]).fp16 is True
