"""The compute ceiling: in-process onnxruntime throughput per batch size, no server, no queue.

The session is built exactly as the server builds it (`OnnxModel` from the repository's config), so the
ratio "served images/s / raw images/s" isolates the serving overhead. Each batch size runs for --seconds
(at least --min-runs runs) after one untimed run.

    .venv/bin/python benchmarks/raw_onnxruntime.py --repository /tmp/bench/models --model mnist_cnn \
        --batch-sizes 1,8,16,32,64 --seconds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cnnserve.repository import read_model
from cnnserve.server.runtime import CPU, OnnxModel


def measure(model: OnnxModel, batch_size: int, seconds: float, min_runs: int) -> dict:
    inputs = model.example_inputs(batch_size)
    for name, value in inputs.items():  # non-zero data, like real images
        inputs[name] = np.random.default_rng(0).integers(0, 255, size=value.shape).astype(value.dtype)
    model.run(inputs)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        model.run(inputs)
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {
        "batch_size": batch_size,
        "runs": len(times),
        "images_per_s": round(batch_size * len(times) / total, 2),
        "ms_per_batch_p50": round(float(np.median(times)) * 1e3, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("/tmp/bench/models"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--spinning", action="store_true", help="let onnxruntime threads busy-wait")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    spec = read_model(args.repository, args.model)[0]
    model = OnnxModel(spec, [CPU], args.intra_op_threads, allow_spinning=args.spinning)
    sizes = [int(s) for s in args.batch_sizes.split(",") if int(s) <= max(spec.max_batch_size, 1)]
    results = []
    for size in sizes:
        r = measure(model, size, args.seconds, args.min_runs)
        results.append(r)
        print(f"{args.model} batch {size:>3}: {r['images_per_s']:>10.1f} images/s ({r['ms_per_batch_p50']} ms/batch)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
