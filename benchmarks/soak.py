"""Memory soak: a bounded run of steady load against `cnnserve serve`, sampling the server's RSS.

    .venv/bin/python benchmarks/soak.py --repository /tmp/bench/models --model mnist_cnn \
        --seconds 600 --concurrency 16 --out runs/soak

RSS is read with psutil every --sample seconds (the server and its children, if --workers). Growth is
measured from the end of the warm-up (--settle seconds: sessions, arenas and gRPC buffers reach their
working size) to the end, and also from the ready line, and written to soak.json with every sample.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from cnnserve.client.bench import report
from cnnserve.client.bench.runner import BenchConfig, run
from cnnserve.process import wait_ready


def rss(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("/tmp/bench/models"))
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sample", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("runs/soak"))
    parser.add_argument("serve_args", nargs="*", help="extra `cnnserve serve` arguments (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", str(args.repository)]
    cmd += ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1", "--http-port", "-1", *args.serve_args]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=(args.out / "server.log").open("w"), text=True)
    try:
        port = wait_ready(server)["grpc_port"]
        proc = psutil.Process(server.pid)
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                samples.append((round(time.monotonic() - t0, 1), rss(proc)))
                stop.wait(args.sample)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        cfg = BenchConfig(
            target=f"127.0.0.1:{port}",
            model=args.model,
            concurrency=[args.concurrency],
            warmup_s=2.0,
            window_s=30.0,
            duration_s=args.seconds,
            label="soak",
        )
        result = run(cfg, lambda line: print(line, file=sys.stderr, flush=True))
        stop.set()
        thread.join()
        samples.append((round(time.monotonic() - t0, 1), rss(proc)))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    ready_rss = samples[0][1]
    settled = next(r for t, r in samples if t >= args.settle)
    end = samples[-1][1]
    level = result["levels"][0]
    out = {
        "model": args.model,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "requests_ok": level["totals"]["ok"],
        "errors": level["totals"]["errors"],
        "rss_mib": {"ready": ready_rss / 2**20, "settled": settled / 2**20, "end": end / 2**20},
        "growth_from_settled_percent": round(100 * (end - settled) / settled, 2),
        "growth_from_ready_percent": round(100 * (end - ready_rss) / ready_rss, 2),
        "max_rss_mib": max(r for _, r in samples) / 2**20,
        "samples": samples,
    }
    (args.out / "soak.json").write_text(json.dumps(out, indent=1) + "\n")
    report.write_json(result, args.out / "soak-bench.json")
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
