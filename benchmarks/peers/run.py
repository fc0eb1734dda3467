"""Issue 13's peer comparison: our HTTP (binary and JSON) and gRPC against MLServer 1.7.1 (REST and gRPC) and
KServe 0.21's Python model server (REST and gRPC), on the same ONNX files, in one session.

The standard method (docs/benchmarks.md): every server started at once and pinned to one core (idle while not
measured), `cnnserve bench` as the load generator for all of them (v2 over HTTP or gRPC) pinned to another,
short runs alternating between the targets round after round (order reversed every other round), medians and
spread, the server's CPU time per request (psutil, its child processes included). The ratios of each round are
taken between figures of that round; their medians are the verdicts.

    .venv/bin/python benchmarks/peers/run.py --repository /tmp/peers-bench/models \\
        --mlserver-venv /tmp/peers-mlserver-venv --kserve-venv /tmp/peers-kserve-venv \\
        --server-cpus 1 --client-cpus 0 --rounds 5 --seconds 4 --out runs/peers

The peers run in their own virtualenvs under /tmp (benchmarks/requirements-mlserver.txt,
benchmarks/peers/requirements-kserve.txt); a peer whose venv is missing is left out. Only 127.0.0.1 is used.
Writes OUT/peers.json (every round's figures) and OUT/peers.md (the tables of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cnnserve.process import wait_ready

ROOT = Path(__file__).resolve().parent.parent.parent
PY = sys.executable
MODELS = ("lenet5", "mnist_cnn")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpus: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


def wait_http_ready(proc: subprocess.Popen, port: int, name: str, timeout: float = 300.0) -> None:
    """Poll GET /v2/health/ready until it answers 200 (the peers print no ready line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{name} not ready within {timeout:.0f} s")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    http_port: int
    grpc_port: int

    def cpu_seconds(self) -> float:
        total = 0.0
        try:
            process = psutil.Process(self.proc.pid)
            for p in [process, *process.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Target:
    label: str  # e.g. "ours-http-binary"
    server: Server
    protocol: str  # grpc or http
    body: str = ""  # with http: binary or json
    rates: dict[str, list[float]] = field(default_factory=dict)  # model -> per round
    p50: dict[str, list[float]] = field(default_factory=dict)
    p99: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        if self.protocol == "http":
            return f"http://127.0.0.1:{self.server.http_port}"
        return f"127.0.0.1:{self.server.grpc_port}"


def start_cnnserve(args, out: Path) -> Server:
    command = [PY, "-m", "cnnserve.cli", "serve", "--model-repository", str(args.repository), "--host", "127.0.0.1"]
    command += ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "-1"]
    err = (out / "cnnserve.log").open("w")
    proc = subprocess.Popen(pinned(args.server_cpus, command), stdout=subprocess.PIPE, stderr=err, text=True)
    ready = wait_ready(proc)
    return Server("cnnserve", proc, ready["http_port"], ready["grpc_port"])


def start_mlserver(args, out: Path) -> Server:
    folder = (out / "mlserver-repo").resolve()  # mlserver runs with cwd=folder
    http, grpc_port = free_port(), free_port()
    prep = [PY, str(ROOT / "benchmarks" / "mlserver" / "prepare.py"), "--repository", str(args.repository)]
    prep += ["--out", str(folder), "--grpc-port", str(grpc_port), "--http-port", str(http)]
    subprocess.run([*prep, "--parallel-workers", str(args.mlserver_workers), *MODELS], check=True)
    env = dict(os.environ, PYTHONPATH=str(folder))
    command = [str(args.mlserver_venv / "bin" / "mlserver"), "start", str(folder)]
    err = (out / "mlserver.log").open("w")
    proc = subprocess.Popen(
        pinned(args.server_cpus, command), stdout=err, stderr=subprocess.STDOUT, env=env, cwd=folder
    )
    wait_http_ready(proc, http, "mlserver")
    return Server("mlserver", proc, http, grpc_port)


def start_kserve(args, out: Path) -> Server:
    http, grpc_port = free_port(), free_port()
    command = [str(args.kserve_venv / "bin" / "python"), str(ROOT / "benchmarks" / "peers" / "kserve_model.py")]
    command += ["--repository", str(args.repository.resolve()), "--http-port", str(http)]
    command += ["--grpc-port", str(grpc_port), *MODELS]
    err = (out / "kserve.log").open("w")
    proc = subprocess.Popen(pinned(args.server_cpus, command), stdout=err, stderr=subprocess.STDOUT, cwd=out)
    wait_http_ready(proc, http, "kserve")
    return Server("kserve", proc, http, grpc_port)


def measure(args, out: Path, target: Target, model: str) -> None:
    label = f"{target.label}-{model}"
    bench = [PY, "-m", "cnnserve.cli", "bench", "--server", target.address, "--protocol", target.protocol]
    if target.body:
        bench += ["--http-body", target.body]
    bench += ["--model", model, "--concurrency", str(args.concurrency), "--processes", str(args.processes)]
    bench += ["--duration", str(args.seconds), "--warmup", str(args.warmup), "--label", label]
    bench += ["--output-dir", str(out), "--no-plot", "--quiet"]
    before = target.server.cpu_seconds()
    done = subprocess.run(pinned(args.client_cpus, bench), capture_output=True, text=True, timeout=300)
    after = target.server.cpu_seconds()
    if done.returncode:
        raise RuntimeError(f"bench of {label} failed: {done.stderr[-2000:]}")
    level = json.loads((out / f"{label}.json").read_text())["levels"][0]
    lat = level["latency_ms"] or {}
    target.rates.setdefault(model, []).append(level["requests_per_s"])
    target.p50.setdefault(model, []).append(lat.get("p50") or float("nan"))
    target.p99.setdefault(model, []).append(lat.get("p99") or float("nan"))
    target.cpu_us.setdefault(model, []).append((after - before) / max(level["totals"]["sent"], 1) * 1e6)
    target.errors[model] = target.errors.get(model, 0) + level["totals"]["errors"]


def spread(values: list[float], digits: int = 0) -> str:
    finite = [v for v in values if v == v] or [float("nan")]
    return f"{_median(values):.{digits}f} ({min(finite):.{digits}f}-{max(finite):.{digits}f})"


# (ours, peer): REST peers against our HTTP (binary: our best; JSON: the same body format), gRPC against gRPC.
PAIRS = [
    ("ours-http-binary", "mlserver-rest"),
    ("ours-http-json", "mlserver-rest"),
    ("ours-grpc", "mlserver-grpc"),
    ("ours-http-binary", "kserve-rest-json"),
    ("ours-http-json", "kserve-rest-json"),
    ("ours-http-binary", "kserve-rest-binary"),
    ("ours-grpc", "kserve-grpc"),
]


def _median(values: list[float]) -> float:
    """Median of the rounds that had answers (a round with none has no percentiles: NaN)."""
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def verdicts(targets: dict[str, Target], model: str) -> list[dict]:
    rows = []
    for ours, peer in PAIRS:
        if ours not in targets or peer not in targets or model not in targets[peer].rates:
            continue
        a, b = targets[ours], targets[peer]
        ratios = [x / y for x, y in zip(a.rates[model], b.rates[model], strict=True) if y > 0]
        p99_lower = [x < y for x, y in zip(a.p99[model], b.p99[model], strict=True)]
        ratio = statistics.median(ratios) if ratios else float("inf")
        # A lower p99 in most rounds and in the medians: one noisy round decides neither way.
        lower = sum(p99_lower) > len(p99_lower) / 2 and _median(a.p99[model]) < _median(b.p99[model])
        # On a pinned core the CPU time per request bounds the rate (1 core / CPU per request); other jobs'
        # contention for that core moves the rates but hardly this, so it is given beside the rate ratio.
        cpu = [y / x for x, y in zip(a.cpu_us[model], b.cpu_us[model], strict=True) if x > 0]
        rows.append(
            {
                "model": model,
                "ours": ours,
                "peer": peer,
                "rate_ratio_median": round(ratio, 3),
                "rate_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
                "p99_ours_median": _median(a.p99[model]),
                "p99_peer_median": _median(b.p99[model]),
                "cpu_ratio_median": round(statistics.median(cpu), 3) if cpu else None,
                "cpu_ratio_range": [round(min(cpu), 3), round(max(cpu), 3)] if cpu else None,
                "p99_lower_rounds": f"{sum(p99_lower)}/{len(p99_lower)}",
                "met": ratio >= 2.0 and lower,
            }
        )
    return rows


def markdown(targets: dict[str, Target], rows: list[dict]) -> str:
    lines = []
    for model in MODELS:
        lines += [
            f"**{model}**, 1 image per request",
            "",
            "| target | req/s median (min-max) | p50 ms | p99 ms | server CPU per request us | errors |",
            "|---|---|---|---|---|---|",
        ]
        for t in targets.values():
            if model in t.rates:
                lines.append(
                    f"| {t.label} | {spread(t.rates[model])} | {spread(t.p50[model], 1)} | "
                    f"{spread(t.p99[model], 1)} | {spread(t.cpu_us[model])} | {t.errors[model]} |"
                )
        lines.append("")
    lines += [
        "| model | ours / peer | rate ratio median (min-max) | p99 ours vs peer (ms, medians) | p99 lower in "
        "| server CPU per request, peer / ours | target >= 2x rate and lower p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["rate_ratio_range"] or (float("nan"), float("nan"))
        clo, chi = r.get("cpu_ratio_range") or (float("nan"), float("nan"))
        verdict = "met" if r["met"] else "**not met**"
        lines.append(
            f"| {r['model']} | {r['ours']} / {r['peer']} | {r['rate_ratio_median']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{r['p99_ours_median']:.1f} vs {r['p99_peer_median']:.1f} | {r['p99_lower_rounds']} rounds | "
            f"{r.get('cpu_ratio_median') or float('nan'):.2f} ({clo:.2f}-{chi:.2f}) | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("/tmp/peers-bench/models"))
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    parser.add_argument("--mlserver-venv", type=Path, default=Path("/tmp/peers-mlserver-venv"))
    parser.add_argument("--mlserver-workers", type=int, default=0, help="MLServer parallel_workers")
    parser.add_argument("--kserve-venv", type=Path, default=Path("/tmp/peers-kserve-venv"))
    parser.add_argument("--kserve-binary", action="store_true", help="also KServe REST with binary tensors")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--server-cpus", default="", help="taskset core list for every server, e.g. 1")
    parser.add_argument("--client-cpus", default="", help="taskset core list for the load generator, e.g. 0")
    parser.add_argument("--only", default="", help="comma-separated target labels (default: all)")
    parser.add_argument("--from-json", type=Path, help="no run: the tables again from a peers.json")
    args = parser.parse_args()
    if args.from_json:
        return rerender(args.from_json)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    servers: list[Server] = []
    targets: dict[str, Target] = {}
    load_start = os.getloadavg()
    try:
        ours = start_cnnserve(args, out)
        servers.append(ours)
        targets |= {
            "ours-grpc": Target("ours-grpc", ours, "grpc"),
            "ours-http-binary": Target("ours-http-binary", ours, "http", "binary"),
            "ours-http-json": Target("ours-http-json", ours, "http", "json"),
        }
        if (args.mlserver_venv / "bin" / "mlserver").exists():
            mls = start_mlserver(args, out)
            servers.append(mls)
            targets |= {
                "mlserver-rest": Target("mlserver-rest", mls, "http", "json"),
                "mlserver-grpc": Target("mlserver-grpc", mls, "grpc"),
            }
        else:
            log(f"no MLServer venv at {args.mlserver_venv}: left out")
        if (args.kserve_venv / "bin" / "python").exists():
            ks = start_kserve(args, out)
            servers.append(ks)
            targets["kserve-rest-json"] = Target("kserve-rest-json", ks, "http", "json")
            if args.kserve_binary:
                targets["kserve-rest-binary"] = Target("kserve-rest-binary", ks, "http", "binary")
            targets["kserve-grpc"] = Target("kserve-grpc", ks, "grpc")
        else:
            log(f"no KServe venv at {args.kserve_venv}: left out")
        if args.only:
            keep = set(args.only.split(","))
            targets = {k: v for k, v in targets.items() if k in keep}
        order = list(targets.values())
        for round_ in range(args.rounds):
            for model in MODELS:
                for t in order if round_ % 2 == 0 else order[::-1]:
                    measure(args, out, t, model)
                log(f"round {round_} {model}: " + ", ".join(f"{t.label} {t.rates[model][-1]:.0f}" for t in order))
    finally:
        for s in servers:
            s.stop()
    rows = [row for model in MODELS for row in verdicts(targets, model)]
    figures = {
        t.label: {
            "server": t.server.name,
            "protocol": t.protocol,
            "body": t.body,
            "rates": t.rates,
            "p50_ms": t.p50,
            "p99_ms": t.p99,
            "cpu_us": t.cpu_us,
            "errors": t.errors,
        }
        for t in targets.values()
    }
    settings = {k: v if isinstance(v, (int, float)) else str(v) for k, v in vars(args).items()}
    machine = {"cpus": os.cpu_count(), "load_average_start": load_start, "load_average_end": os.getloadavg()}
    report = {"args": settings, "machine": machine, "targets": figures, "verdicts": rows}
    (out / "peers.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(targets, rows)
    (out / "peers.md").write_text(text)
    print(text)
    return 0


def rerender(path: Path) -> int:
    """Verdicts and tables recomputed from the figures of an earlier run (peers.md beside it rewritten)."""
    report = json.loads(path.read_text())
    targets = {}
    for label, f in report["targets"].items():
        t = Target(label, None, f["protocol"], f["body"])
        t.rates, t.p50, t.p99, t.cpu_us, t.errors = f["rates"], f["p50_ms"], f["p99_ms"], f["cpu_us"], f["errors"]
        targets[label] = t
    rows = [row for model in MODELS for row in verdicts(targets, model)]
    report["verdicts"] = rows
    path.write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(targets, rows)
    (path.parent / "peers.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
