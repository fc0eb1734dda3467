"""CPU time per request of the dynamic batcher alone: DynamicBatcher.submit with a trivial model, no gRPC.

64 concurrent callers, max batch 8, 2 ms window; with and without a 30 s deadline per request. CPU time is
the process's (both the loop and the executor thread), divided by the requests answered; it is steadier than
throughput on a shared machine. Compare two versions of the code by running this file under each:

    .venv/bin/python benchmarks/batcher_micro.py [--requests 40000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from cnnserve.server.batcher import DynamicBatcher
from cnnserve.server.stats import ModelStats


def _run_batch(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": np.zeros((inputs["x"].shape[0], 10), np.float32)}


async def measure(requests: int, concurrency: int, deadline: bool) -> tuple[float, float]:
    """Returns (CPU microseconds per request, requests per second)."""
    batcher = DynamicBatcher(
        _run_batch,
        name="micro",
        max_batch_size=8,
        max_queue_delay_s=0.002,
        max_queue_size=1024,
        stats=ModelStats(name="micro", version="1"),
    )
    await batcher.start()
    loop = asyncio.get_running_loop()
    x = {"x": np.zeros((1, 28, 28, 1), np.uint8)}
    left = requests

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await batcher.submit(x, deadline=loop.time() + 30 if deadline else None)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu1, wall1 = time.process_time(), time.perf_counter()
    await batcher.stop()
    return (cpu1 - cpu0) / requests * 1e6, requests / (wall1 - wall0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for deadline in (True, False):
        runs = [asyncio.run(measure(args.requests, args.concurrency, deadline)) for _ in range(args.repeats)]
        cpu = sorted(r[0] for r in runs)
        print(
            f"deadline={deadline}: CPU per request median {cpu[len(cpu) // 2]:.1f} us (min {cpu[0]:.1f}); "
            f"{max(r[1] for r in runs):.0f} req/s at best"
        )


if __name__ == "__main__":
    main()
