"""The fp16 variant of an exported model: float16 weights and arithmetic inside, the same edges outside.

``cnnserve export VARIANT --fp16`` converts the checked fp32 ONNX model with onnxruntime's float16 converter
(``onnxruntime.transformers.float16``, shipped with onnxruntime), keeping the graph's inputs and outputs as they
were (uint8 images in, float32 probabilities out: the served contract does not change) and Softmax in float32
(its exponentials are where half precision loses most, and it costs nothing). Then the fp16 model must match
the fp32 ONNX model on the same held-out samples as the fp32 parity check:

- every probability within ``FP16_MAX_ABS_DIFF`` (1e-2: half precision keeps about 3 significant digits,
  and the error of a deep network's logits grows with its depth), and
- the same top-1 class on every sample whose fp32 top-two margin is above ``2 * FP16_MAX_ABS_DIFF``; closer
  calls may flip within the tolerance and are counted, not failed (``top1_agreement`` reports all samples).

The report is recorded as ``parity_fp16`` in metadata.json beside the fp32 one, with ``precision: "fp16"``;
the server checks both before serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cnnserve.repository import FP16_MAX_ABS_DIFF, fp16_parity_failure

__all__ = ["Fp16Report", "compare_fp16", "convert_fp16", "fp16_parity_failure"]

KEEP_FP32_OPS = ("Softmax",)


@dataclass(frozen=True)
class Fp16Report:
    samples: int
    top1_agreement: float  # over all samples
    decisive_samples: int  # fp32 top-two margin > 2 * tolerance
    decisive_top1_agreement: float  # must be 1.0
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    reference: str = "fp32 onnx"

    def as_dict(self) -> dict:
        return asdict(self)


def convert_fp16(source: Path, target: Path) -> None:
    """Write the fp16 variant of the ONNX model ``source`` to ``target`` (they may be the same path)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *KEEP_FP32_OPS]
    )
    # The converter appends the casts around kept-fp32 nodes at the end of the graph: sort it again.
    OnnxModel.graph_topological_sort(converted.graph, is_deterministic=True)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(target))


def compare_fp16(reference: np.ndarray, candidate: np.ndarray, tolerance: float = FP16_MAX_ABS_DIFF) -> Fp16Report:
    """fp16 probabilities against the fp32 model's on the same samples."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    top = np.sort(reference, axis=1)
    decisive = (top[:, -1] - top[:, -2]) > 2 * tolerance if reference.shape[1] > 1 else np.ones(len(reference), bool)
    same = reference.argmax(1) == candidate.argmax(1)
    return Fp16Report(
        samples=int(len(reference)),
        top1_agreement=float(same.mean()),
        decisive_samples=int(decisive.sum()),
        decisive_top1_agreement=float(same[decisive].mean()) if decisive.any() else 1.0,
        max_abs_diff=float(diff.max()) if np.isfinite(diff).all() else float("inf"),
        mean_abs_diff=float(diff.mean()),
        tolerance=tolerance,
    )


def make_fp16_variant(onnx_path: Path, x: np.ndarray, input_name: str, output_name: str) -> dict:
    """Replace the checked fp32 model at ``onnx_path`` by its fp16 variant once that matches it on ``x``.

    Returns what metadata.json records (``precision`` and ``parity_fp16``); raises
    :class:`~cnnserve.export.parity.ParityError` (and leaves the fp32 file) when the variant misses.
    """
    import os

    from cnnserve.export.parity import ParityError, onnx_session, predict_onnx

    fp32 = predict_onnx(onnx_session(onnx_path), x, input_name, output_name)
    staged = onnx_path.with_name(onnx_path.stem + ".fp16.onnx")
    convert_fp16(onnx_path, staged)
    session = onnx_session(staged)
    if [i.type for i in session.get_inputs()] + [o.type for o in session.get_outputs()] != [
        i.type for i in onnx_session(onnx_path).get_inputs()
    ] + [o.type for o in onnx_session(onnx_path).get_outputs()]:
        raise ParityError(f"{staged}: the fp16 variant changed the graph's input or output types")
    report = compare_fp16(fp32, predict_onnx(session, x, input_name, output_name))
    failure = fp16_parity_failure(report.as_dict())
    if failure:
        staged.unlink()
        raise ParityError(failure)
    os.replace(staged, onnx_path)
    return {"precision": "fp16", "parity_fp16": {**report.as_dict(), "provider": session.get_providers()[0]}}
