"""``cnnserve export VARIANT``: argparse wiring for :func:`cnnserve.export.exporter.export_variant`."""

from __future__ import annotations

import argparse
import json
import sys
from inspect import signature
from pathlib import Path

from cnnserve.export.onnx_convert import DEFAULT_OPSET
from cnnserve.training.commands import add_variant_argument


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``export`` subcommand on an ``add_subparsers()`` object; returns its parser."""
    parser = subparsers.add_parser(
        "export",
        help="convert a trained variant to ONNX, prove parity, and write it to the model repository",
        description="Convert ARTIFACTS/VARIANT/savedmodel to ONNX, check it, prove ONNX Runtime vs "
        "TensorFlow parity on the held-out digits, and install it in the Triton-layout repository. "
        "Nothing is written to the repository when a check fails.",
    )
    add_variant_argument(parser)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="default %(default)s")
    parser.add_argument(
        "--model-repository", dest="repository", type=Path, default=Path("models"), help="default %(default)s"
    )
    parser.add_argument("--version", type=int, default=1, help="model version folder (default %(default)s)")
    parser.add_argument(
        "--data", dest="data_path", default=None, help="data training used (default: the path in its metadata)"
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument(
        "--parity-samples", type=int, default=None, help="held-out digits for parity (default: all, >= 256)"
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="install the float16 variant (float32 probabilities out), checked against the fp32 ONNX model",
    )
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from cnnserve.export.exporter import export_variant
    from cnnserve.export.parity import ParityError

    try:
        options = {k: v for k, v in vars(args).items() if k in signature(export_variant).parameters}
        out = export_variant(args.variant, **options)
    except ParityError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    meta = json.loads((out / "metadata.json").read_text())
    parity = meta["parity"]
    print(
        f"{args.variant}: parity on {parity['samples']} held-out samples: top-1 agreement "
        f"{parity['top1_agreement']:.4f}, max |dprob| {parity['max_abs_diff']:.2e} -> {out}"
    )
    if "parity_fp16" in meta:
        p16 = meta["parity_fp16"]
        print(
            f"{args.variant}: fp16 against fp32 ONNX: top-1 agreement {p16['top1_agreement']:.4f} "
            f"({p16['decisive_top1_agreement']:.4f} on {p16['decisive_samples']} clear cases), "
            f"max |dprob| {p16['max_abs_diff']:.2e} (tolerance {p16['tolerance']:g})"
        )
    return 0
