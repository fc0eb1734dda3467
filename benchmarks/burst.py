"""A burst of unary ModelInfer calls started at once, every answer's status code tallied (issue 11).

    .venv/bin/python benchmarks/burst.py --server-cpus 1 --client-cpus 0 --out runs/burst-after.json
    .venv/bin/python benchmarks/burst.py --tree /tmp/rel-before --server-cpus 1 --client-cpus 0 \\
        --out runs/burst-before.json          # the same bursts against another checkout (its own .venv)

It builds a model repository (the test suite's tiny classifier "m": 28x28x1 uint8 -> 10 classes, batches to
64, 2 ms queue delay), or takes ``--repository`` and ``--model`` (the demo's: ``--repository models --model
mnist_cnn``), starts ``cnnserve serve`` on it with the defaults (port 0, 127.0.0.1), and then runs each burst of
``--bursts`` (CALLSxCHANNELS, default 3000x1 and 10000x4): that many calls started at once, one 28x28 image
each, built with tritonclient's own protocol messages, each with a ``--deadline`` (30 s). After each burst it
reads ``cnnserve_requests_total`` (the difference over the burst, by code), health and ServerReady, and sends
one good call. Bounded: it stops once the bursts are done (each call has its deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from cnnserve.process import wait_ready

ROOT = Path(__file__).resolve().parent.parent


def infer_request(model: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(bytes(784))
    return request


def start_server(tree: Path, repository: Path, cpus: str | None, log: Path, extra: list[str]) -> tuple:
    python = str(tree / ".venv" / "bin" / "python") if tree != ROOT else sys.executable
    command = [python, "-m", "cnnserve.cli", "serve", "--model-repository", str(repository)]
    command += ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", *extra]
    if "http_port" in (tree / "server" / "settings.py").read_text():  # a checkout with the HTTP front door
        command += ["--http-port", "-1"]  # gRPC is what is measured; and no fixed port to collide on
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    # HTTP off unless asked for (an older tree ignores the variable).
    env = dict(os.environ, CNNSERVE_HTTP_PORT=os.environ.get("CNNSERVE_HTTP_PORT", "-1"))
    proc = subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    event = wait_ready(proc)
    return proc, event["grpc_port"], event["metrics_port"]


def requests_total(metrics_port: int) -> Counter:
    """cnnserve_requests_total by (method, code), as the server's metrics endpoint says now."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
    counts: Counter = Counter()
    for labels, value in re.findall(r"cnnserve_requests_total\{([^}]*)\} (\S+)", text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        counts[(fields["method"], fields["code"])] += int(float(value))
    return counts


async def burst(address: str, model: str, calls: int, channels: int, deadline: float) -> tuple[Counter, float]:
    """``calls`` ModelInfer calls started at once over ``channels`` channels: (code, details) tallied, seconds."""
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in opened]
    request = infer_request(model)

    async def one(i: int) -> tuple[str, str]:
        try:
            await stubs[i % channels].ModelInfer(request, timeout=deadline)
            return "OK", ""
        except grpc.aio.AioRpcError as err:
            return err.code().name, err.details() or ""

    started = time.perf_counter()
    try:
        tally = Counter(await asyncio.gather(*(one(i) for i in range(calls))))
    finally:
        for c in opened:
            await c.close()
    return tally, time.perf_counter() - started


def after_burst(address: str, model: str) -> dict:
    """Health, ServerReady and one good call right after a burst."""
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=30).ready
        try:
            stub.ModelInfer(infer_request(model), timeout=30)
            good = "OK"
        except grpc.RpcError as err:
            good = err.code().name
    return {"health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status), "ready": ready, "good": good}


def run_bursts(args, address: str, metrics_port: int) -> list[dict]:
    results = []
    for spec in args.bursts:
        calls, channels = (int(x) for x in spec.split("x"))
        before = requests_total(metrics_port)
        tally, seconds = asyncio.run(burst(address, args.model, calls, channels, args.deadline))
        counted = requests_total(metrics_port) - before
        codes: Counter = Counter()
        details: dict[str, str] = {}
        for (code, detail), n in tally.most_common():
            codes[code] += n
            details.setdefault(code, detail)
        result = {
            "burst": spec,
            "calls": calls,
            "channels": channels,
            "seconds": round(seconds, 2),
            "codes": dict(codes),
            "details": details,  # one message per code, as the caller saw it
            "counted": {code: n for (method, code), n in counted.items() if method == "ModelInfer"},
            **after_burst(address, args.model),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose server runs (its own .venv)")
    parser.add_argument("--repository", type=Path, help="model repository (default: a tiny one, built here)")
    parser.add_argument("--model", default="m", help="model to call (default m, the tiny one)")
    parser.add_argument("--bursts", nargs="+", default=["3000x1", "10000x4"], help="CALLSxCHANNELS each")
    parser.add_argument("--deadline", type=float, default=30.0, help="each call's deadline, seconds")
    parser.add_argument("--server-cpus", help="taskset the server to these CPUs (e.g. 1)")
    parser.add_argument("--client-cpus", help="pin this load generator to these CPUs (e.g. 0)")
    parser.add_argument("--server-args", default="", help="extra `cnnserve serve` arguments")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    with tempfile.TemporaryDirectory(prefix="burst-") as tmp:
        repository = args.repository
        if repository is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from support import write_model  # the test suite's tiny classifier

            repository = Path(tmp) / "models"
            write_model(repository, "m", max_batch_size=64, delay_us=2000)
        log = Path(tmp) / "server.log"
        proc, port, metrics_port = start_server(
            args.tree.resolve(), repository.resolve(), args.server_cpus, log, args.server_args.split()
        )
        try:
            results = run_bursts(args, f"127.0.0.1:{port}", metrics_port)
        finally:
            proc.terminate()
            status = proc.wait(60)
        record = {"tree": str(args.tree), "server_exit": status, "results": results}
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
