"""A/B of server configurations: all started at once (idle while not measured), short bench runs alternating
between them, medians reported. On a noisy shared machine this separates a real difference from drift better
than two runs minutes apart. Also reports the server's CPU time per request (psutil), warm-up included.

    .venv/bin/python benchmarks/ab.py --model mnist_cnn --rounds 8 --seconds 5 \\
        'pref8=--model-repository /tmp/bench/models' 'nopref=--model-repository /tmp/bench/models2'
    .venv/bin/python benchmarks/ab.py --model mnist_cnn 'batching=' 'unbatched=--no-batching'

Each configuration is LABEL=EXTRA `cnnserve serve` ARGUMENTS (default repository: --repository).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from cnnserve.process import wait_ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="LABEL=extra serve arguments")
    parser.add_argument("--model", required=True)
    parser.add_argument("--repository", default="/tmp/bench/models")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="cnnserve-ab-"))
    servers = []
    try:
        for config in args.configs:
            label, _, extra = config.partition("=")
            extra_args = shlex.split(extra)
            repo = [] if "--model-repository" in extra_args else ["--model-repository", args.repository]
            cmd = [sys.executable, "-m", "cnnserve.cli", "serve", *repo, "--host", "127.0.0.1", "--grpc-port", "0"]
            cmd += ["--metrics-port", "-1", *extra_args]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=(out / f"{label}.log").open("w"), text=True)
            servers.append((label, proc, wait_ready(proc)["grpc_port"]))
        rates: dict[str, list[float]] = {label: [] for label, _, _ in servers}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in servers}
        for round_ in range(args.rounds):
            for label, proc, port in servers if round_ % 2 == 0 else servers[::-1]:
                before = sum(psutil.Process(proc.pid).cpu_times()[:2])
                bench = [sys.executable, "-m", "cnnserve.cli", "bench", "--server", f"127.0.0.1:{port}"]
                bench += [
                    "--model",
                    args.model,
                    "--concurrency",
                    str(args.concurrency),
                    "--duration",
                    str(args.seconds),
                ]
                bench += [
                    "--warmup",
                    str(args.warmup),
                    "--label",
                    label,
                    "--output-dir",
                    str(out),
                    "--no-plot",
                    "--quiet",
                ]
                subprocess.run(bench, check=True, capture_output=True)
                level = json.loads((out / f"{label}.json").read_text())["levels"][0]
                after = sum(psutil.Process(proc.pid).cpu_times()[:2])
                rates[label].append(level["requests_per_s"])
                cpu[label].append((after - before) / max(level["totals"]["sent"], 1) * 1e6)
            print(round_, {label: round(values[-1]) for label, values in rates.items()}, flush=True)
    finally:
        for _, proc, _ in servers:
            proc.terminate()
            proc.wait(60)
    for label, values in rates.items():
        print(
            f"{label:12s} median {statistics.median(values):7.0f} req/s  min {min(values):7.0f}  max {max(values):7.0f}"
            f"  server CPU per request (median) {statistics.median(cpu[label]):6.0f} us"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
