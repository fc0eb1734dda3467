"""The `cnnserve` command: train, export, serve, classify."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("cnnserve")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model repository over gRPC (KServe v2 / Triton protocol)")
    p.add_argument("--model-repository", type=Path, help="Triton-layout model repository (default: models)")
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 picks a free port)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 8002; -1 disables)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="onnxruntime execution provider (default cpu)")
    p.add_argument("--allow-cpu-fallback", action="store_true", default=None, help="with --device cuda")
    p.add_argument("--max-message-bytes", type=int, help="largest gRPC message (default 64 MiB)")
    p.add_argument("--max-queue-size", type=int, help="per-model queue bound in samples (default 1024)")
    p.add_argument("--no-batching", dest="batching", action="store_false", default=None, help="run requests alone")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", default=None)
    p.add_argument("--intra-op-threads", type=int, help="onnxruntime threads per session (0: its default)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument(
        "--auth-token-file", type=Path, help="accepted bearer tokens, one per line (CNNSERVE_AUTH_TOKENS also)"
    )
    p.add_argument(
        "--max-concurrent-calls",
        type=int,
        help="admission limit: work calls at once, more are refused RESOURCE_EXHAUSTED (0: what the queues hold)",
    )
    p.add_argument(
        "--max-pending-calls", type=int, help="calls gRPC core may hold before the server picks them up (65536)"
    )
    p.add_argument("--repository-poll-seconds", type=float, help="reload new/changed models every N s (0: off)")
    p.add_argument("--grace-seconds", type=float, help="SIGTERM grace period (default 10)")
    p.add_argument("--explainer-address", help="explainer sidecar HOST:PORT (default 127.0.0.1:8011)")
    p.add_argument(
        "--explainer-tls-ca",
        type=Path,
        help="CA of the explainer's certificate: TLS to the sidecar (default plaintext)",
    )
    p.add_argument("--workers", type=int, help="server processes sharing the port via SO_REUSEPORT (default 1)")
    p.add_argument("--uvloop", action="store_true", default=None, help="run the event loop on uvloop")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from cnnserve.server.app import CnnServer
    from cnnserve.server.settings import ServerSettings

    fields = ServerSettings.model_fields
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    settings = ServerSettings(**overrides)

    def ready(grpc_port: int, metrics_port: int) -> None:
        # One machine-readable line, so scripts and tests that bind port 0 learn the ports.
        print(json.dumps({"event": "ready", "grpc_port": grpc_port, "metrics_port": metrics_port}), flush=True)

    if settings.workers > 1:
        from cnnserve.server.workers import run_loop, serve_workers

        run_loop(serve_workers(settings, settings.workers, ready), settings.uvloop)
        return 0

    async def run() -> None:
        server = CnnServer(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        ready(server.grpc_port, server.metrics_port)
        await stop.wait()
        log.info("signal received: shutting down (grace %.1fs)", settings.grace_seconds)
        await server.stop()

    from cnnserve.server.workers import run_loop

    run_loop(run(), settings.uvloop)
    return 0


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", help="classify PNG/JPEG images with a served model")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--server", default="127.0.0.1:8001", help="HOST:PORT of cnnserve (default 127.0.0.1:8001)")
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--version", default="", help="model version (default: the served one)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0, help="deadline per call in seconds")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--tls-ca", help="PEM CA that signed the server's certificate (enables TLS)")
    p.add_argument("--tls-cert", help="client certificate for mutual TLS")
    p.add_argument("--tls-key", help="client key for mutual TLS")
    p.add_argument("--token-file", type=Path, help="file holding a bearer token (or set CNNSERVE_TOKEN)")
    p.set_defaults(func=_classify)


def _classify(args) -> int:
    import grpc

    from cnnserve.client import CnnserveClient

    token = args.token_file.read_text().strip() if args.token_file else None
    with CnnserveClient(
        args.server, timeout=args.timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key, token=token
    ) as client:
        try:
            response = client.classify(
                args.model, [p.read_bytes() for p in args.images], top_k=args.top_k, version=args.version
            )
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    for path, result in zip(args.images, response.results, strict=True):
        preds = [{"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in result.predictions]
        if args.json:
            print(json.dumps({"image": str(path), "predictions": preds}))
        else:
            print(f"{path}: " + ", ".join(f"{p['label']} ({p['score']:.4f})" for p in preds))
    return 0


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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_optional(sub, "cnnserve.training.cli", "add_train_parser", "train", "train")
    _add_optional(sub, "cnnserve.export.cli", "add_export_parser", "export", "train")
    _add_optional(sub, "cnnserve.training.commands", "add_variants_parser", "variants", "train")
    _add_optional(sub, "cnnserve.training.commands", "add_evaluate_parser", "evaluate", "train")
    _add_optional(sub, "cnnserve.training.commands", "add_faces_parser", "faces", "train")
    _add_serve(sub)
    _add_classify(sub)
    _add_optional(sub, "cnnserve.server.explainer.cli", "add_explainer_parsers", "explainer", "explainer")
    _add_optional(sub, "cnnserve.bench.cli", "add_bench_parser", "bench", "bench")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
