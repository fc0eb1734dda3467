"""Every baseline of docs/benchmarks.md in one run, one server at a time, ratios computed from this run.

    .venv/bin/python benchmarks/run_baselines.py --repository /tmp/bench/models --out runs/baselines

Needs the model repository from benchmarks/build_models.py and, for the MLServer peer, .bench-venv
(benchmarks/requirements-mlserver.txt). Only 127.0.0.1 is used. Writes one JSON per bench run, raw
onnxruntime figures, summary.json and summary.md (the tables of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cnnserve.bench import report
from cnnserve.bench.runner import BenchConfig, run

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SMALL = ("lenet5", "mnist_cnn")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Server:
    """A server subprocess that prints a JSON ready line (cnnserve serve, the null server)."""

    def __init__(self, name: str, args: list[str], out: Path, env=None, cwd: Path | None = None, port: int = 0):
        self.name, self.args, self.out, self.env, self.cwd = name, args, out, env, cwd
        self.proc: subprocess.Popen | None = None
        self.port = port

    def __enter__(self) -> Server:
        err = (self.out / f"{self.name}.log").open("w")
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env, cwd=self.cwd
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited; see {self.out / (self.name + '.log')}")
            if line.startswith("{") and json.loads(line).get("event") == "ready":
                self.port = json.loads(line)["grpc_port"]
                return self
        raise TimeoutError(f"{self.name} not ready")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class MLServer(Server):
    """mlserver start in its own virtualenv; ready once its gRPC port answers ServerReady."""

    def __enter__(self) -> Server:
        err = (self.out / f"{self.name}.log").open("w")
        self.proc = subprocess.Popen(self.args, stdout=err, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        import grpc

        from cnnserve._proto.inference import grpc_service_pb2 as pb
        from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc

        deadline = time.monotonic() + 300
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlserver exited; see {self.out / (self.name + '.log')}")
                try:
                    if stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(1)
        raise TimeoutError("mlserver not ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cnnserve(repo: Path, *extra: str) -> list[str]:
    return [PY, "-m", "cnnserve.cli", "serve", "--model-repository", str(repo), "--host", "127.0.0.1"] + [
        "--grpc-port", "0", "--metrics-port", "-1", *extra,
    ]  # fmt: skip


def bench(args, label: str, address: str, model: str, concurrency: list[int], heavy: bool = False) -> dict:
    cfg = BenchConfig(
        target=address,
        model=model,
        concurrency=concurrency,
        processes=args.processes,
        warmup_s=8.0 if heavy else args.warmup,
        window_s=10.0 if heavy else args.window,
        max_windows=3 if heavy else args.max_windows,
        stable_windows=2 if heavy else 3,
        timeout_s=120.0 if heavy else 30.0,
        label=label,
    )
    result = run(cfg, log)
    report.write_json(result, args.out / f"{label}.json")
    log(report.table(result))
    return result


def raw(args, model: str, sizes: str, seconds: float) -> dict:
    path = args.out / f"raw-{model}.json"
    cmd = [PY, str(ROOT / "benchmarks" / "raw_onnxruntime.py"), "--repository", str(args.repository)]
    cmd += ["--model", model, "--batch-sizes", sizes, "--seconds", str(seconds), "--min-runs", "2", "--json", str(path)]
    subprocess.run(cmd, check=True)
    return {r["batch_size"]: r for r in json.loads(path.read_text())["results"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("/tmp/bench/models"))
    parser.add_argument("--out", type=Path, default=Path("runs/baselines"))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--max-windows", type=int, default=5)
    parser.add_argument("--heavy", default="vgg16", help="compute-heavy model ('' to skip)")
    parser.add_argument("--heavy-concurrency", type=int, default=8)
    parser.add_argument("--mlserver-venv", type=Path, default=ROOT / ".bench-venv")
    parser.add_argument("--mlserver-workers", type=int, default=0, help="MLServer parallel_workers")
    parser.add_argument("--parts", default="raw,null,cnnserve,mlserver", help="which baselines to run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    c = [args.concurrency]
    results: dict[str, dict] = {}
    summary: dict = {"machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}}

    parts = set(args.parts.split(","))
    summary["raw"] = {}
    if "raw" in parts:
        log("== raw onnxruntime")
        summary["raw"] = {m: raw(args, m, "1,8,16,32,64", 2.0) for m in SMALL}
    if args.heavy and "raw" in parts:
        summary["raw"][args.heavy] = raw(args, args.heavy, f"1,{args.heavy_concurrency}", 10.0)

    for loop in ("asyncio", "uvloop") if "null" in parts else ():
        extra = ["--uvloop"] if loop == "uvloop" else []
        with Server(f"null-{loop}", [PY, str(ROOT / "benchmarks" / "null_server.py"), *extra], args.out) as s:
            results[f"null-{loop}"] = bench(args, f"null-{loop}", s.address, "mnist_cnn", c)

    variants = {
        "cnnserve-batching": [],
        "cnnserve-nobatching": ["--no-batching"],
        "cnnserve-batching-uvloop-w2": ["--uvloop", "--workers", "2"],
    }
    for name, extra in variants.items() if "cnnserve" in parts else ():
        log(f"== {name}")
        with Server(name, cnnserve(args.repository, *extra), args.out) as s:
            for model in SMALL:
                results[f"{name}-{model}"] = bench(args, f"{name}-{model}", s.address, model, c)
            if args.heavy and "w2" not in name:
                hc = [args.heavy_concurrency]
                results[f"{name}-{args.heavy}"] = bench(args, f"{name}-{args.heavy}", s.address, args.heavy, hc, True)

    mls = args.mlserver_venv / "bin" / "mlserver"
    if mls.exists() and "mlserver" in parts:
        log("== MLServer")
        folder = (args.out / "mlserver-repo").resolve()  # mlserver runs with cwd=folder
        port, http = free_port(), free_port()
        models = [*SMALL, args.heavy] if args.heavy else list(SMALL)
        prep = [PY, str(ROOT / "benchmarks" / "mlserver" / "prepare.py"), "--repository", str(args.repository)]
        prep += ["--out", str(folder), "--grpc-port", str(port), "--http-port", str(http)]
        subprocess.run([*prep, "--parallel-workers", str(args.mlserver_workers), *models], check=True)
        env = dict(os.environ, PYTHONPATH=str(folder))
        with MLServer("mlserver", [str(mls), "start", str(folder)], args.out, env=env, cwd=folder, port=port) as s:
            for model in SMALL:
                results[f"mlserver-{model}"] = bench(args, f"mlserver-{model}", s.address, model, c)
            if args.heavy:
                hc = [args.heavy_concurrency]
                results[f"mlserver-{args.heavy}"] = bench(
                    args, f"mlserver-{args.heavy}", s.address, args.heavy, hc, True
                )

    report.write_csv(list(results.values()), args.out / "all.csv")
    report.write_plot(
        [r for k, r in results.items() if "vgg" not in k], args.out / "small.png", "c=64, 1 image/request"
    )
    summary["levels"] = {k: _brief(r["levels"][0]) for k, r in results.items()}
    summary["machine"]["load_average_end"] = os.getloadavg()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(json.dumps(summary["levels"], indent=1))
    return 0


def _brief(level: dict) -> dict:
    lat = level["latency_ms"] or {}
    server = level["server"] or {}
    return {
        "requests_per_s": round(level["requests_per_s"], 1),
        "images_per_s": round(level["images_per_s"], 1),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "stable": level["stable"],
        "errors": level["totals"]["errors"],
        "mean_batch": server.get("mean_batch_size"),
    }


if __name__ == "__main__":
    sys.exit(main())
