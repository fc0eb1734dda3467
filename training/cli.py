"""``cnnserve train VARIANT``: argparse wiring for :func:`cnnserve.training.train.train_variant`."""

from __future__ import annotations

import argparse
import json
from inspect import signature
from pathlib import Path

from cnnserve.training.commands import add_variant_argument
from cnnserve.training.distribute import STRATEGIES


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand on an ``add_subparsers()`` object; returns its parser."""
    parser = subparsers.add_parser(
        "train",
        help="train a registered CNN variant and write its SavedModel, .keras and metadata",
        description="Train a CNN variant on local data; writes OUTPUT_DIR/VARIANT/{savedmodel/, model.keras, "
        "train_metadata.json, logs/}. Accuracy is measured on a held-out split training never sees.",
    )
    add_variant_argument(parser)
    parser.add_argument(
        "--data",
        dest="data_path",
        default=None,
        help="dataset: a file or folder, 'keras' (keras.datasets download), 'sklearn' (digits); "
        "default: the variant's (see `cnnserve variants`)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the variant's")
    parser.add_argument("--seed", type=int, default=0, help="seed for Python, NumPy, TF (default %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=Path("artifacts"), help="default %(default)s")
    parser.add_argument("--limit", type=int, default=None, help="train on only N samples (quick runs, tests)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the variant's")
    parser.add_argument(
        "--smoke", action="store_true", help="a few steps on generated data at a CI-sized input (checks the pipeline)"
    )
    parser.add_argument(
        "--weights", default=None, help="pretrained variants: imagenet | none | PATH (Keras weights file, offline)"
    )
    parser.add_argument(
        "--distribute",
        choices=STRATEGIES,
        default="none",
        help="tf.distribute strategy: mirrored (GPUs of this machine), multiworker (machines, via TF_CONFIG)",
    )
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from cnnserve.training.train import train_variant

    out = train_variant(
        args.variant, **{k: v for k, v in vars(args).items() if k in signature(train_variant).parameters}
    )
    meta = json.loads((out / "train_metadata.json").read_text())
    held = meta["metrics"]["heldout"]
    print(
        f"{args.variant}: held-out accuracy {held['accuracy']:.4f} ({held['correct']}/{held['count']}), "
        f"loss {held['loss']:.4f}, {meta['metrics']['train_seconds']:.0f}s -> {out}"
    )
    return 0
