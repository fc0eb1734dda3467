"""``cnnserve export VARIANT`` (:func:`cnnserve.export.exporter.export_variant`), ``cnnserve export --keras PATH
--name NAME`` (:mod:`cnnserve.export.keras_model`) and ``cnnserve export --onnx PATH --name NAME``
(:mod:`cnnserve.export.onnx_model`): argparse wiring. Each group of options is added by a function of its own."""

from __future__ import annotations

import argparse
import json
import sys
from inspect import signature
from pathlib import Path

from cnnserve.export.onnx_convert import DEFAULT_OPSET
from cnnserve.training.registry import VARIANTS


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``export`` subcommand on an ``add_subparsers()`` object; returns its parser."""
    parser = subparsers.add_parser(
        "export",
        help="convert a trained variant, your own Keras model or your ONNX model for serving, and install it",
        description="VARIANT: convert ARTIFACTS/VARIANT/savedmodel to ONNX, check it, prove ONNX Runtime vs "
        "TensorFlow parity on the held-out digits, and install it in the Triton-layout repository. "
        "--keras PATH / --onnx PATH with --name NAME: your own image classifier (see README, 'Serve your own "
        "model'). Nothing is written to the repository when a check fails.",
    )
    parser.add_argument("variant", metavar="VARIANT", nargs="?", choices=sorted(VARIANTS), help="one of %(choices)s")
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
    add_own_model_arguments(parser)
    parser.add_argument(
        "--faithfulness-samples",
        type=int,
        default=None,
        help="parity samples to score the heatmaps on (default 64, 8 for smoke runs; --keras: of the --samples "
        "images, never generated ones; 0: no scores)",
    )
    parser.set_defaults(func=run_export)
    return parser


def add_own_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--keras`` / ``--onnx`` and the options of a model this project did not define."""
    own = parser.add_argument_group("your own model (instead of VARIANT)")
    source = own.add_mutually_exclusive_group()
    source.add_argument("--keras", type=Path, metavar="PATH", help="a .keras file or a SavedModel directory")
    source.add_argument("--onnx", type=Path, metavar="PATH", help="an ONNX image classifier (PyTorch's export, say)")
    own.add_argument("--name", dest="model_name", help="model name in the repository (required with --keras/--onnx)")
    own.add_argument("--labels", type=Path, metavar="FILE", help="one label per line (default class_0..class_{K-1})")
    own.add_argument("--scale", type=float, help="x * scale before mean/std, x the uint8 pixel (default 1/255)")
    own.add_argument("--mean", metavar="M1,M2,M3", help="per-channel mean subtracted after scaling (default 0)")
    own.add_argument("--std", metavar="S1,S2,S3", help="per-channel std dividing after the mean (default 1)")
    own.add_argument("--bgr", action="store_true", help="swap RGB to BGR first (caffe-style models)")
    own.add_argument("--softmax", action="store_true", help="turn the model's logits into probabilities")
    own.add_argument("--layout", choices=["NCHW", "NHWC"], help="--onnx: the input's layout (default: from its shape)")
    own.add_argument(
        "--samples", type=Path, metavar="DIR", help="--keras: parity images, a folder of PNG/JPEG or a uint8 .npy "
        "(default: 256 generated images)",
    )  # fmt: skip
    own.add_argument("--max-batch-size", type=int, default=32, help="with a dynamic batch (default %(default)s)")


def run_own_model(args: argparse.Namespace) -> int:
    from cnnserve.export.onnx_model import TrialRunError
    from cnnserve.export.own_model import ExportInputError
    from cnnserve.export.parity import ParityError

    if args.variant:
        print(f"export: give VARIANT or --keras/--onnx, not both (VARIANT {args.variant!r})", file=sys.stderr)
        return 2
    if getattr(args, "fp16", False):
        print("export: --fp16 applies to VARIANT exports; --keras/--onnx install the float32 model", file=sys.stderr)
        return 2
    if not args.model_name:
        print("export: --name NAME is required with --keras and --onnx", file=sys.stderr)
        return 2
    common = dict(
        name=args.model_name, repository=args.repository, version=args.version, labels=args.labels, scale=args.scale,
        mean=args.mean, std=args.std, bgr=args.bgr, softmax=args.softmax, max_batch_size=args.max_batch_size,
    )  # fmt: skip
    try:
        if args.onnx:
            from cnnserve.export.onnx_model import export_onnx

            if args.samples:
                raise ExportInputError("--samples applies to --keras (an ONNX model gets a trial run)")
            out = export_onnx(args.onnx, layout=args.layout, **common)
        else:
            from cnnserve.export.keras_model import export_keras

            if args.layout:
                raise ExportInputError("--layout applies to --onnx (a Keras model's input is NHWC)")
            faithfulness = (
                {} if args.faithfulness_samples is None else {"faithfulness_samples": args.faithfulness_samples}
            )
            out = export_keras(args.keras, samples=args.samples, opset=args.opset, **common, **faithfulness)
    except (ExportInputError, TrialRunError, ParityError) as exc:
        print(f"export failed, nothing installed: {exc}", file=sys.stderr)
        return 2
    meta = json.loads((out / "metadata.json").read_text())
    check = meta.get("parity") or meta.get("trial") or {}
    what = "parity" if "parity" in meta else "trial run"
    print(
        f"{args.model_name}: {what} on {check.get('samples')} images ({check.get('images', '')}): max |diff| "
        f"{check.get('max_abs_diff', float('nan')):.2e}; client sends {meta['client_sends']} -> {out}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from cnnserve.export.exporter import export_variant
    from cnnserve.export.parity import ParityError

    if args.keras or args.onnx:
        return run_own_model(args)
    if not args.variant:
        print("export: give VARIANT, or --keras PATH / --onnx PATH with --name NAME", file=sys.stderr)
        return 2
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
