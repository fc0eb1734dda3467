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

from cnnserve.client.bench import report
from cnnserve.client.bench.runner import BenchConfig, run

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
        "--grpc-port", "0", "--metrics-port", "-1", "--http-port", "-1", *extra,
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
    summary["targets"] = targets(summary, args.heavy)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(targets_markdown(summary["targets"]))
    log(json.dumps(summary["levels"], indent=1))
    log(targets_markdown(summary["targets"]))
    return 0


def targets(summary: dict, heavy: str) -> list[dict]:
    """Issue 5's targets as ratios of this run's figures (a target whose parts did not run is left out)."""
    levels, raw = summary["levels"], summary.get("raw", {})
    rate = {k: v["requests_per_s"] for k, v in levels.items()}
    out = []

    def add(target, value, threshold, detail, extra_ok=True):
        out.append(
            {"target": target, "value": round(value, 3), "threshold": threshold, "met": value >= threshold and extra_ok}
            | {"detail": detail}
        )

    if {"cnnserve-batching-mnist_cnn", "cnnserve-nobatching-mnist_cnn"} <= rate.keys():
        b, n = rate["cnnserve-batching-mnist_cnn"], rate["cnnserve-nobatching-mnist_cnn"]
        add("mnist_cnn c=64: batching / no batching", b / n, 3.0, f"{b:.0f} / {n:.0f} req/s")
    key = f"cnnserve-batching-{heavy}"
    if heavy and key in levels and heavy in raw:
        batch = levels[key]["mean_batch"] or 1
        # The best raw batch size is the ceiling (conservative: the served mean batch lies between the sizes).
        size = max(raw[heavy], key=lambda s: raw[heavy][s]["images_per_s"])
        ceiling = raw[heavy][size]["images_per_s"]
        add(
            f"{heavy}: served / raw onnxruntime images/s",
            levels[key]["images_per_s"] / ceiling,
            0.9,
            f"{levels[key]['images_per_s']:.2f} (mean batch {batch:.1f}) / {ceiling:.2f} at raw b={size}",
        )
    if "null-asyncio" in rate:
        for model in SMALL:
            if f"cnnserve-batching-{model}" in rate:
                r = rate[f"cnnserve-batching-{model}"]
                add(
                    f"{model}: request rate / null handler",
                    r / rate["null-asyncio"],
                    0.75,
                    f"{r:.0f} / {rate['null-asyncio']:.0f} req/s",
                )
    for model in (*SMALL, heavy):
        ours, peer = levels.get(f"cnnserve-batching-{model}"), levels.get(f"mlserver-{model}")
        if model and ours and peer:
            lower_p99 = (ours["p99_ms"] or 0) < (peer["p99_ms"] or float("inf"))
            add(
                f"{model}: cnnserve / MLServer throughput, and a lower p99",
                ours["images_per_s"] / peer["images_per_s"],
                2.0,
                f"{ours['images_per_s']:.1f} / {peer['images_per_s']:.1f}; p99 {ours['p99_ms']:.0f} vs {peer['p99_ms']:.0f} ms",
                lower_p99,
            )
    return out


def targets_markdown(rows: list[dict]) -> str:
    lines = ["| target | this run | needed | verdict |", "|---|---|---|---|"]
    for r in rows:
        verdict = "met" if r["met"] else "**not met**"
        lines.append(f"| {r['target']} | {r['value']:.2f} ({r['detail']}) | >= {r['threshold']} | {verdict} |")
    return "\n".join(lines) + "\n"


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
