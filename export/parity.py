"""ONNX Runtime vs TensorFlow parity on real held-out samples."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cnnserve.repository import PARITY_MAX_ABS_DIFF, PARITY_TOP1_REQUIRED

MIN_SAMPLES = 256


class ParityError(RuntimeError):
    """The ONNX model does not reproduce the TensorFlow model within tolerance."""


@dataclass(frozen=True)
class ParityReport:
    samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    onnxruntime: str
    provider: str

    def as_dict(self) -> dict:
        return asdict(self)


def onnx_session(path: Path):
    """A CPU onnxruntime session for ``path``."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def predict_onnx(session, x: np.ndarray, input_name: str, output_name: str, batch_size: int = 64) -> np.ndarray:
    out = [session.run([output_name], {input_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def check_parity(
    reference: np.ndarray, candidate: np.ndarray, tolerance: float = PARITY_MAX_ABS_DIFF, provider: str = ""
) -> ParityReport:
    """Compare candidate (ONNX) probabilities against the reference (TensorFlow) ones.

    Raises :class:`ParityError` unless top-1 agreement is 100 % and max |delta prob| <= ``tolerance``.
    """
    import onnxruntime as ort

    if reference.shape != candidate.shape:
        raise ParityError(f"Output shapes differ: TensorFlow {reference.shape}, ONNX {candidate.shape}")
    if len(reference) < MIN_SAMPLES:
        raise ParityError(f"Parity needs at least {MIN_SAMPLES} samples. Received: {len(reference)}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agreement = float((reference.argmax(1) == candidate.argmax(1)).mean())
    report = ParityReport(
        samples=int(len(reference)),
        top1_agreement=agreement,
        max_abs_diff=float(diff.max()) if np.isfinite(diff).all() else float("inf"),
        mean_abs_diff=float(diff.mean()),
        tolerance=tolerance,
        onnxruntime=ort.__version__,
        provider=provider,
    )
    if report.top1_agreement < PARITY_TOP1_REQUIRED or not report.max_abs_diff <= tolerance:
        raise ParityError(
            f"ONNX/TensorFlow parity failed on {report.samples} held-out samples: top-1 agreement "
            f"{report.top1_agreement:.4%} (need {PARITY_TOP1_REQUIRED:.0%}), max |dprob| {report.max_abs_diff:.3g} "
            f"(need <= {tolerance:g})"
        )
    return report
