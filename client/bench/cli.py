"""`cnnserve bench`: argument parsing, the progress display and the result files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cnnserve.client.bench.payload import parse_inputs


def _numbers(kind):
    def parse(text: str):
        values = [kind(v) for v in text.split(",") if v]
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive comma-separated numbers, got {text!r}")
        return values

    return parse


def add_bench_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="load-test a KServe v2 server over gRPC or HTTP (cnnserve, MLServer, Triton)",
        description=(
            "Closed-loop concurrency sweeps or open-loop request rates against a KServe v2 / Triton gRPC "
            "server, from several client processes. Each level runs a warm-up, then measurement windows until "
            "the last --stable-windows agree within --stability (or for a fixed --duration). Writes "
            "LABEL.json, LABEL.csv and LABEL.png into --output-dir."
        ),
    )
    p.add_argument(
        "--server",
        dest="target",
        default="127.0.0.1:8001",
        help="HOST:PORT or http://HOST:PORT (default 127.0.0.1:8001)",
    )
    p.add_argument(
        "--protocol",
        choices=["grpc", "http"],
        help="KServe v2 over gRPC or HTTP/1.1 REST (default: http for an http:// server, else grpc)",
    )
    p.add_argument(
        "--http-body",
        choices=["binary", "json"],
        default="binary",
        help="with http: Triton's binary tensor data extension (default) or JSON tensors",
    )
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--model-version", dest="version", default="", help="model version (default: the server's choice)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=_numbers(int), help="closed loop: requests in flight, e.g. 1,8,64")
    mode.add_argument("--rate", dest="rates", type=_numbers(float), help="open loop: requests/s, e.g. 100,200,400")
    p.add_argument("--arrival", choices=["constant", "poisson"], default="constant", help="open-loop arrivals")
    p.add_argument("--images", dest="images_per_request", type=int, default=1, help="images per request (default 1)")
    p.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels per client process (default 1)")
    p.add_argument("--warmup", dest="warmup_s", type=float, default=2.0, help="warm-up seconds per level (default 2)")
    p.add_argument("--window", dest="window_s", type=float, default=3.0, help="measurement window seconds (default 3)")
    p.add_argument("--stable-windows", type=int, default=3, help="windows that must agree (default 3)")
    p.add_argument("--stability", type=float, default=10.0, help="agreement in percent (default 10)")
    p.add_argument("--max-windows", type=int, default=8, help="give up on stability after this many (default 8)")
    p.add_argument(
        "--duration", dest="duration_s", type=float, default=0.0, help="fixed measurement seconds (no stability search)"
    )
    p.add_argument(
        "--timeout", dest="timeout_s", type=float, default=30.0, help="deadline per request in seconds (default 30)"
    )
    p.add_argument("--inputs", type=parse_inputs, help="NAME:DATATYPE:DIMS (-1 batch) if no ModelMetadata")
    p.add_argument("--label", default="", help="name of this run in files and plots (default: the model)")
    p.add_argument("--output-dir", type=Path, default=Path("runs/bench"), help="default runs/bench")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from cnnserve.client.bench import report
    from cnnserve.client.bench.runner import BenchConfig, run

    options = {k: v for k, v in vars(args).items() if k in BenchConfig.__dataclass_fields__ and v is not None}
    options["concurrency"] = args.concurrency or ([] if args.rates else [1])
    options["protocol"] = args.protocol or ("http" if args.target.startswith("http://") else "grpc")
    if args.target.startswith("https://"):
        print("error: the bench tool speaks plaintext only; give http://HOST:PORT", file=sys.stderr)
        return 2
    cfg = BenchConfig(**options | {"stability": args.stability / 100, "label": args.label or args.model})
    t0 = time.monotonic()

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - t0:7.1f}s] {line}", file=sys.stderr, flush=True)

    try:
        result = run(cfg, progress)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stem = args.output_dir / cfg.label
    files = [report.write_json(result, stem.with_suffix(".json")), report.write_csv([result], stem.with_suffix(".csv"))]
    if not args.no_plot:
        files.append(report.write_plot([result], stem.with_suffix(".png")))
    print(report.table(result))
    print("wrote " + ", ".join(str(f) for f in files if f))
    return 0
