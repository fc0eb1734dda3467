"""HTTP against gRPC on one `cnnserve serve` (both ports, the same batchers): rates and p99 in the same run.

    .venv/bin/python benchmarks/http_vs_grpc.py --repository /tmp/bench/models --models lenet5,mnist_cnn \\
        --server-cpus 1 --client-cpus 0 --rounds 3 --seconds 5 [--json runs/http_vs_grpc.json]

The server runs with --intra-op-threads 1 (--server-args): pinned to one core, onnxruntime's default pool of
one thread per core spins against the event loop, and a batch of 64 that arrives at once (64 new HTTP
connections) took seconds instead of milliseconds.

One server, pinned to --server-cpus, serves gRPC and HTTP. Each round benches every model over gRPC, HTTP with
Triton's binary tensor data and HTTP with JSON tensors, one at a time (`cnnserve bench`, closed loop,
--concurrency in flight from --processes pinned to --client-cpus, one 28x28 image per request), the order
reversed every other round. Reported per model and transport: the median request rate and p99 over the rounds,
and the median of each round's rate divided by gRPC's rate in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cnnserve.process import wait_ready

TRANSPORTS = ("grpc", "http-binary", "http-json")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bench(transport: str, server: dict, model: str, args, out: Path, pid: int) -> dict:
    if transport == "grpc":
        target = ["--server", f"127.0.0.1:{server['grpc_port']}"]
    else:
        target = ["--server", f"http://127.0.0.1:{server['http_port']}", "--http-body", transport.split("-")[1]]
    label = f"{model}-{transport}"
    command = [sys.executable, "-m", "cnnserve.cli", "bench", *target, "--model", model,
               "--concurrency", str(args.concurrency), "--processes", str(args.processes),
               "--duration", str(args.seconds), "--warmup", str(args.warmup), "--window", str(args.seconds),
               "--output-dir", str(out), "--label", label, "--no-plot", "--quiet"]  # fmt: skip
    if args.client_cpus:
        command = ["taskset", "-c", args.client_cpus, *command]
    cpu0 = _cpu_s(pid)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{label}: cnnserve bench failed: {done.stderr[-2000:]}")
    cpu = _cpu_s(pid) - cpu0
    level = json.loads((out / f"{label}.json").read_text())["levels"][0]
    p99 = (level["latency_ms"] or {}).get("p99")
    cpu_us = cpu / level["totals"]["sent"] * 1e6 if level["totals"]["sent"] else None
    return {"rate": level["requests_per_s"], "p99": p99, "errors": level["totals"]["error_codes"], "cpu_us": cpu_us}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", required=True)
    p.add_argument("--models", default="lenet5,mnist_cnn")
    p.add_argument("--server-cpus", default="1")
    p.add_argument("--client-cpus", default="0")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument(
        "--server-args",
        default="--intra-op-threads 1",
        help="extra `cnnserve serve` arguments (default: one onnxruntime thread, as the server has one core)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    command = [sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", args.repository,
               "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "-1",
               *shlex.split(args.server_args)]  # fmt: skip
    if args.server_cpus:
        command = ["taskset", "-c", args.server_cpus, *command]
    models = args.models.split(",")
    runs: dict = {m: {t: [] for t in TRANSPORTS} for m in models}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            server = wait_ready(proc)
            for r in range(args.rounds):
                for model in models:
                    order = TRANSPORTS if r % 2 == 0 else tuple(reversed(TRANSPORTS))
                    for transport in order:
                        try:
                            result = _bench(transport, server, model, args, Path(tmp), proc.pid)
                        except RuntimeError as exc:  # one failed measurement (e.g. a stalled machine) is a gap
                            print(f"round {r + 1} {model} {transport}: failed: {str(exc)[-300:]}", file=sys.stderr)
                            continue
                        runs[model][transport].append(result)
                        print(f"round {r + 1} {model} {transport}: {result['rate']:,.0f} req/s, p99 {result['p99']} ms {result['errors']}, server CPU {result['cpu_us']:.0f} us/request",
                              file=sys.stderr)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(60)
    summary = {}
    for model in models:
        grpc_rates = {i: x["rate"] for i, x in enumerate(runs[model]["grpc"])}
        summary[model] = {}
        for transport in TRANSPORTS:
            rates = [x["rate"] for x in runs[model][transport]]
            if not rates:
                continue
            # rounds where both measurements succeeded (a failed one leaves a gap; indices then may shift)
            ratios = [a / grpc_rates[i] for i, a in enumerate(rates) if grpc_rates.get(i)]
            summary[model][transport] = {
                "median_rate": round(statistics.median(rates), 1),
                "min_rate": round(min(rates), 1),
                "max_rate": round(max(rates), 1),
                "median_p99_ms": statistics.median(x["p99"] or 0 for x in runs[model][transport]),
                "median_ratio_to_grpc": round(statistics.median(ratios), 3) if ratios else None,
                "median_server_cpu_us_per_request": round(
                    statistics.median(x["cpu_us"] for x in runs[model][transport])
                ),
                "errors": [x["errors"] for x in runs[model][transport] if x["errors"]],
            }
    print(
        "| model | transport | median req/s (min-max) | p99 ms (median) | rate / gRPC, median of rounds | server CPU per request |"
    )
    print("|---|---|---|---|---|---|")
    for model, rows in summary.items():
        for transport, s in rows.items():
            print(f"| {model} | {transport} | {s['median_rate']:,.0f} ({s['min_rate']:,.0f}-{s['max_rate']:,.0f}) | "
                  f"{s['median_p99_ms']} | {s['median_ratio_to_grpc']} | {s['median_server_cpu_us_per_request']} us |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs,
                                         "summary": summary}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
