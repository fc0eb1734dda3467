"""``cnnserve variants``, ``cnnserve evaluate VARIANT`` and ``cnnserve faces extract VIDEO``: argparse wiring.

Importing this module never imports TensorFlow; the commands import what they need when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from inspect import signature
from pathlib import Path

from cnnserve.training.registry import VARIANTS


def add_variant_argument(parser: argparse.ArgumentParser) -> None:
    """The VARIANT argument of train, export and evaluate: a name of the registry."""
    parser.add_argument("variant", metavar="VARIANT", choices=sorted(VARIANTS), help="one of %(choices)s")


def add_variants_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "variants",
        help="list the registered CNN variants (input shape, classes, parameters, data, weights)",
        description="List every CNN variant of the registry. Needs no TensorFlow.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run_variants)
    return parser


def variant_rows() -> list[dict]:
    rows = []
    for name in VARIANTS:
        v = VARIANTS[name]
        rows.append(
            {
                "name": name,
                "input": "x".join(map(str, v.input_shape)),
                "smoke_input": "x".join(map(str, v.smoke_input_shape or v.input_shape)),
                "classes": v.num_classes,
                "params": v.params,
                "dataset": v.dataset,
                "default_data": v.default_data,
                "weights": v.default_weights or "none",
                "last_conv": v.last_conv_layer,
                "cam_layer": v.heatmap_layer,
                "heavy": v.heavy,
            }
        )
    return rows


def run_variants(args: argparse.Namespace) -> int:
    rows = variant_rows()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = (
        f"{'variant':<15} {'input':<11} {'smoke':<11} {'classes':>7} {'params':>12}  {'data':<14} {'weights':<8} "
        f"{'last conv':<20} grad-cam layer"
    )
    print(header)
    for r in rows:
        print(
            f"{r['name']:<15} {r['input']:<11} {r['smoke_input']:<11} {r['classes']:>7} {r['params']:>12,}  "
            f"{r['dataset']:<14} {r['weights']:<8} {r['last_conv']:<20} {r['cam_layer']}"
        )
    return 0


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy of an exported variant through the served ONNX path and through TensorFlow, side by side",
        description="Evaluate the repository's model VARIANT on the held-out split of --data: ONNX Runtime "
        "(or a running server with --server) next to the TensorFlow SavedModel of the same version.",
    )
    add_variant_argument(parser)
    parser.add_argument(
        "--data", dest="data_path", default=None, help="data set (default: the data in the model's metadata)"
    )
    parser.add_argument(
        "--model-repository", dest="repository", type=Path, default=Path("models"), help="default %(default)s"
    )
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--server", default=None, help="HOST:PORT of a running cnnserve: ONNX through gRPC")
    parser.add_argument(
        "--all", dest="heldout_only", action="store_false", help="every sample of --data, not only the held-out split"
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N samples only")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    from cnnserve.training.evaluate import evaluate_served

    report = evaluate_served(
        args.variant, **{k: v for k, v in vars(args).items() if k in signature(evaluate_served).parameters}
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.variant} v{args.version} on {report['samples']} samples of {report['data']} ({report['subset']}):")
    print(f"  {'path':<28} {'accuracy':>9}")
    print(f"  {report['onnx_path']:<28} {report['onnx_accuracy']:>9.4f}")
    print(f"  {'tensorflow (SavedModel)':<28} {report['tf_accuracy']:>9.4f}")
    print(f"  top-1 agreement {report['top1_agreement']:.4f}, max |dprob| {report['max_abs_diff']:.2e}")
    return 0


def add_faces_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("faces", help="face_cnn's data step: crop faces from videos")
    sub = parser.add_subparsers(dest="faces_command", required=True)
    extract = sub.add_parser(
        "extract",
        help="crop the face of every N-th frame of VIDEO into OUTPUT/PERSON/ (50x70 PNG)",
        description="Read VIDEO with OpenCV, find the face in every --every-th frame with OpenCV's Haar "
        "cascade (falling back to a centred 5:7 box when none is found, unless --no-fallback), resize to "
        "50x70 and write OUTPUT/PERSON/*.png, then train with `cnnserve train face_cnn --data OUTPUT`.",
    )
    extract.add_argument("video", type=Path, metavar="VIDEO")
    extract.add_argument("--person", required=True, help="the person's name (the folder and the label)")
    extract.add_argument("--output", type=Path, default=Path("faces"), help="default %(default)s")
    extract.add_argument("--every", type=int, default=5, help="take every N-th frame (default %(default)s)")
    extract.add_argument("--max-faces", type=int, default=None)
    extract.add_argument("--no-fallback", dest="fallback", action="store_false", help="skip frames without a face")
    extract.set_defaults(func=run_faces_extract)
    return parser


def run_faces_extract(args: argparse.Namespace) -> int:
    from cnnserve.training.faces import extract_faces

    try:
        crops = extract_faces(
            args.video, args.person, args.output, every=args.every, max_faces=args.max_faces, fallback=args.fallback
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    detected = sum(c.method == "haar" for c in crops)
    print(f"{args.person}: {len(crops)} faces ({detected} detected, {len(crops) - detected} centre box) "
          f"-> {args.output / args.person}")  # fmt: skip
    return 0 if crops else 1


def add_variant_commands(subparsers) -> None:
    """All three commands (``cnnserve.cli`` registers them through ``_add_optional``)."""
    add_variants_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_faces_parser(subparsers)
