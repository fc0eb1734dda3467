"""A bounded chaos run (issue 11): bursts, a worker SIGKILLed under load, the sidecar flooded; every answer's
status code tallied against the codes each phase allows.

    .venv/bin/python benchmarks/chaos.py --out runs/chaos.json

It builds a repository (the test suite's tiny classifier "m" for onnxruntime, with an untrained digit CNN as
its model.keras for the sidecar), or takes ``--repository``/``--model`` (the demo's: ``models mnist_cnn``),
starts `cnnserve explainer` (``--max-queued-images``, default 64) and `cnnserve serve --workers 2` on
127.0.0.1, port 0, and runs, one after the other:

1. bursts: ``--bursts`` (default 3000x1 and 10000x4) ModelInfer calls started at once (benchmarks/burst.py);
   allowed: OK, RESOURCE_EXHAUSTED.
2. kill: ``--clients`` closed-loop clients (one channel each) for ``--kill-seconds``; halfway one worker is
   SIGKILLed. Allowed: OK, and UNAVAILABLE (calls on the dead worker's connections).
3. flood: ``--flood`` Score-CAM Heatmap calls of ``--flood-images`` images each through the main server at
   once (30 s deadlines), with classification going on beside them. Allowed for the heatmaps: OK,
   RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED; for classification: OK.

Then health, one good call, the server's metrics (all workers) and the sidecar's. Bounded: each phase ends
by itself (every call has a deadline); the processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import psutil
from burst import ROOT, after_burst, burst, infer_request, requests_total
from tritonclient.grpc import service_pb2_grpc

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc
from cnnserve.process import wait_ready

ALLOWED = {
    "bursts": {"OK", "RESOURCE_EXHAUSTED"},
    "kill": {"OK", "UNAVAILABLE"},
    "flood_heatmaps": {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"},
    "flood_classification": {"OK"},
}


def build_repository(root: Path) -> tuple[Path, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support import add_keras_model, tiny_digit_model, write_model  # the test suite's models

    repository = root / "models"
    add_keras_model(write_model(repository, "m", max_batch_size=64, delay_us=2000), tiny_digit_model(seed=0))
    return repository, "m"


def start(args: list[str], log: Path) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "cnnserve.cli", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    return proc, wait_ready(proc)


def worker_pids(server: subprocess.Popen) -> list[int]:
    pids = []
    for child in psutil.Process(server.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in p for p in child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:
            pass
    return sorted(pids)


async def closed_loop(address: str, model: str, clients: int, seconds: float, halfway=None) -> Counter:
    """``clients`` callers, one channel each, one call at a time for ``seconds``; ``halfway()`` at the middle."""
    tally: Counter = Counter()
    request = infer_request(model)
    end = time.monotonic() + seconds

    async def client() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < end:
                try:
                    await stub.ModelInfer(request, timeout=30)
                    tally["OK"] += 1
                except grpc.aio.AioRpcError as err:
                    tally[err.code().name] += 1

    async def middle() -> None:
        await asyncio.sleep(seconds / 2)
        if halfway is not None:
            halfway()

    await asyncio.gather(middle(), *(client() for _ in range(clients)))
    return tally


async def flood(address: str, model: str, calls: int, images: int, clients: int, seconds: float) -> dict:
    """``calls`` Score-CAM heatmaps at once through the main server, classification beside them."""
    digits = [explainer_pb2.ExplainImage(raw=explainer_pb2.RawImage(data=bytes(784), height=28, width=28, channels=1))]
    request = explainer_pb2.HeatmapRequest(
        model_name=model, images=digits * images, method=explainer_pb2.HEATMAP_METHOD_SCORE_CAM
    )
    heatmaps: Counter = Counter()
    details: dict[str, str] = {}

    async def one(stub) -> None:
        try:
            await stub.Heatmap(request, timeout=30)
            heatmaps["OK"] += 1
        except grpc.aio.AioRpcError as err:
            heatmaps[err.code().name] += 1
            details.setdefault(err.code().name, err.details() or "")

    async with grpc.aio.insecure_channel(address) as channel:
        stub = explainer_pb2_grpc.ExplainerStub(channel)
        started = time.perf_counter()
        classified, _ = await asyncio.gather(
            closed_loop(address, model, clients, seconds), asyncio.gather(*(one(stub) for _ in range(calls)))
        )
    return {
        "heatmaps": dict(heatmaps),
        "details": details,
        "classification": dict(classified),
        "seconds": round(time.perf_counter() - started, 1),
    }


def metrics_text(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ("cnnserve_requests_total" in line or "explainer" in line or
                                                  "worker" in line):  # fmt: skip
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def unexpected(phases: dict) -> int:
    bad = 0
    for name, allowed in ALLOWED.items():
        bad += sum(n for code, n in phases.get(name, {}).items() if code not in allowed)
    return bad


def run(args, tmp: Path) -> dict:
    repository, model = (args.repository, args.model) if args.repository else build_repository(tmp)
    sidecar, side = start(
        ["explainer", "--model-repository", str(repository), "--host", "127.0.0.1", "--grpc-port", "0",
         "--metrics-port", "0", "--max-queued-images", str(args.max_queued_images)],
        tmp / "explainer.log",
    )  # fmt: skip
    server, ready = start(
        ["serve", "--model-repository", str(repository), "--host", "127.0.0.1", "--grpc-port", "0",
         "--metrics-port", "0", "--http-port", "-1", "--workers", "2", "--explainer-address", f"127.0.0.1:{side['grpc_port']}"],
        tmp / "server.log",
    )  # fmt: skip
    address = f"127.0.0.1:{ready['grpc_port']}"
    record: dict = {"phases": {}}
    try:
        bursts: Counter = Counter()
        for spec in args.bursts:
            calls, channels = (int(x) for x in spec.split("x"))
            tally, seconds = asyncio.run(burst(address, model, calls, channels, 30.0))
            codes = Counter()
            for (code, _detail), n in tally.items():
                codes[code] += n
            bursts.update(codes)
            print(json.dumps({"phase": "burst", "burst": spec, "codes": codes, "seconds": round(seconds, 1)}))
        record["phases"]["bursts"] = dict(bursts)

        before = worker_pids(server)
        killed = []

        def kill() -> None:
            killed.append(before[0])
            os.kill(before[0], signal.SIGKILL)

        record["phases"]["kill"] = dict(asyncio.run(closed_loop(address, model, args.clients, args.kill_seconds, kill)))
        record["killed"] = {"pid": killed, "workers_before": before, "workers_after": worker_pids(server)}
        print(json.dumps({"phase": "kill", "codes": record["phases"]["kill"], **record["killed"]}))

        flooded = asyncio.run(flood(address, model, args.flood, args.flood_images, args.clients, args.flood_seconds))
        record["phases"]["flood_heatmaps"] = flooded["heatmaps"]
        record["phases"]["flood_classification"] = flooded["classification"]
        record["flood_details"] = flooded["details"]
        print(json.dumps({"phase": "flood", **flooded}))

        record["after"] = after_burst(address, model)
        record["server_metrics"] = metrics_text(ready["metrics_port"])
        record["sidecar_metrics"] = metrics_text(side["metrics_port"])
        record["server_requests"] = {f"{m} {c}": n for (m, c), n in requests_total(ready["metrics_port"]).items()}
    finally:
        for proc in (server, sidecar):
            proc.terminate()
        record["exit"] = {"server": server.wait(60), "explainer": sidecar.wait(60)}
    record["unexpected"] = unexpected(record["phases"])
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository with model.keras (default: built here)")
    parser.add_argument("--model", default="m")
    parser.add_argument("--bursts", nargs="+", default=["3000x1", "10000x4"])
    parser.add_argument("--clients", type=int, default=8, help="closed-loop classification clients")
    parser.add_argument("--kill-seconds", type=float, default=20.0)
    parser.add_argument("--flood", type=int, default=200, help="Score-CAM heatmap calls started at once")
    parser.add_argument("--flood-images", type=int, default=16)
    parser.add_argument("--flood-seconds", type=float, default=20.0, help="classification beside the flood")
    parser.add_argument("--max-queued-images", type=int, default=64, help="the sidecar's admission bound")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        record = run(args, Path(tmp))
    print(json.dumps({k: record[k] for k in ("phases", "after", "exit", "unexpected")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))
    return 1 if record["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
