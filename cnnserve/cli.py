"""The `cnnserve` command: each part registers its own subcommands (train, export, serve, explainer, classify, ...)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cnnserve.client.cli import add_classify_parser, add_explain_parser
from cnnserve.server.cli import add_serve_parser


def _add_optional(sub, module: str, adder: str, command: str, extra: str) -> None:
    """Subcommands that need TensorFlow register only where it is installed; elsewhere they say so."""
    try:
        getattr(importlib.import_module(module), adder)(sub)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return  # the command's own module is not part of this build
        p = sub.add_parser(command, help=f"(needs: pip install 'cnnserve[{extra}]')", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda _a, e=exc: _missing(command, extra, e))


def _missing(command: str, extra: str, exc: Exception) -> int:
    print(
        f"error: `cnnserve {command}` needs the '{extra}' extra ({exc}); pip install 'cnnserve[{extra}]'",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnserve", description=__doc__)
    parser.add_argument("-v", "--verbose", dest="debug", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_optional(sub, "cnnserve.training.cli", "add_train_parser", "train", "train")
    _add_optional(sub, "cnnserve.export.cli", "add_export_parser", "export", "train")
    _add_optional(sub, "cnnserve.training.commands", "add_variants_parser", "variants", "train")
    _add_optional(sub, "cnnserve.training.commands", "add_evaluate_parser", "evaluate", "train")
    _add_optional(sub, "cnnserve.training.commands", "add_faces_parser", "faces", "train")
    add_serve_parser(sub)
    add_classify_parser(sub)
    _add_optional(sub, "cnnserve.explainer.cli", "add_explainer_parsers", "explainer", "explainer")
    add_explain_parser(sub)
    _add_optional(sub, "cnnserve.client.bench.cli", "add_bench_parser", "bench", "bench")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
