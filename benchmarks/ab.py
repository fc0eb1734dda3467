"""A/B of server configurations: all started at once (idle while not measured), short bench runs alternating
between them, medians reported. On a noisy shared machine this separates a real difference from drift better
than two runs minutes apart. Also reports the server's CPU time per request (psutil), warm-up included.

The standard method (docs/benchmarks.md): the servers pinned to one core and the load generator to another,
lenet5 measured against the null server in the same rounds, so the ratio lenet5 / null is what our code costs
beside the transport's own ceiling:

    .venv/bin/python benchmarks/ab.py --model lenet5 --server-cpus 1 --client-cpus 0 null=null lenet5=
    .venv/bin/python benchmarks/ab.py --model lenet5 --server-cpus 1 --client-cpus 0 \\
        null=null 'before@/tmp/layout-before=' after=          # a second checkout (with its own .venv) as "before"

Other uses:

    .venv/bin/python benchmarks/ab.py --model mnist_cnn --rounds 8 --seconds 5 \\
        'pref8=--model-repository /tmp/bench/models' 'nopref=--model-repository /tmp/bench/models2'
    .venv/bin/python benchmarks/ab.py --model mnist_cnn 'batching=' 'unbatched=--no-batching'

Each configuration is LABEL[@TREE]=ARGUMENTS: ARGUMENTS are extra `cnnserve serve` arguments (default
repository: --repository), or the word `null` for benchmarks/null_server.py. With @TREE the server runs from
that checkout (TREE/.venv/bin/python, its own code); without, from this one.
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
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from cnnserve.process import wait_ready

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    label: str
    command: list[str]
    cwd: Path
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def parse_config(text: str, repository: str) -> Config:
    """LABEL[@TREE]=ARGUMENTS -> the server command of that configuration."""
    head, _, extra = text.partition("=")
    label, _, tree = head.partition("@")
    root = Path(tree).resolve() if tree else ROOT
    python = str(root / ".venv" / "bin" / "python") if tree else sys.executable
    if extra.strip() == "null":
        return Config(label, [python, str(root / "benchmarks" / "null_server.py")], root)
    extra_args = shlex.split(extra)
    repo = [] if "--model-repository" in extra_args else ["--model-repository", repository]
    command = [python, "-m", "cnnserve.cli", "serve", *repo, "--host", "127.0.0.1", "--grpc-port", "0"]
    # Trees with the HTTP front door open it on 8000 by default; two such servers side by side would clash.
    if (root / "server" / "http").is_dir() and "--http-port" not in extra_args:
        command += ["--http-port", "-1"]
    return Config(label, [*command, "--metrics-port", "-1", *extra_args], root)


def pinned(cpus: str, command: list[str]) -> list[str]:
    """``command`` run on the cores ``cpus`` (taskset execs it: the process id stays the server's)."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="LABEL[@TREE]=extra serve arguments, or LABEL=null")
    parser.add_argument("--model", required=True)
    parser.add_argument("--repository", default="/tmp/bench/models")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--server-cpus", default="", help="taskset core list for every server, e.g. 1")
    parser.add_argument("--client-cpus", default="", help="taskset core list for the load generator, e.g. 0")
    parser.add_argument("--ratio-to", default="", help="label whose rate divides the others' per round (default: null)")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    args = parser.parse_args()
    configs = [parse_config(text, args.repository) for text in args.configs]
    labels = [c.label for c in configs]
    base = args.ratio_to or next((c.label for c in configs if c.command[-1].endswith("null_server.py")), "")
    out = Path(tempfile.mkdtemp(prefix="cnnserve-ab-"))
    servers: list[tuple[Config, subprocess.Popen, int]] = []
    ratios: dict[str, list[float]] = {label: [] for label in labels if label != base}
    try:
        for c in configs:
            log = (out / f"{c.label}.log").open("w")
            command = pinned(args.server_cpus, c.command)
            # HTTP off unless asked for (servers run side by side; an older tree ignores the variable).
            env = dict(os.environ, CNNSERVE_HTTP_PORT=os.environ.get("CNNSERVE_HTTP_PORT", "-1"))
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=c.cwd, env=env)
            servers.append((c, proc, wait_ready(proc)["grpc_port"]))
        for round_ in range(args.rounds):
            for c, proc, port in servers if round_ % 2 == 0 else servers[::-1]:
                before = cpu_seconds(proc.pid)
                bench = [sys.executable, "-m", "cnnserve.cli", "bench", "--server", f"127.0.0.1:{port}"]
                bench += ["--model", args.model, "--concurrency", str(args.concurrency)]
                bench += ["--duration", str(args.seconds), "--warmup", str(args.warmup), "--label", c.label]
                bench += ["--output-dir", str(out), "--no-plot", "--quiet"]
                subprocess.run(pinned(args.client_cpus, bench), check=True, capture_output=True)
                level = json.loads((out / f"{c.label}.json").read_text())["levels"][0]
                c.rates.append(level["requests_per_s"])
                c.cpu_us.append((cpu_seconds(proc.pid) - before) / max(level["totals"]["sent"], 1) * 1e6)
            by_label = {c.label: c for c, _, _ in servers}
            if base:
                for label in ratios:
                    ratios[label].append(by_label[label].rates[-1] / by_label[base].rates[-1])
            print(round_, {c.label: round(c.rates[-1]) for c in configs}, flush=True)
    finally:
        for _, proc, _ in servers:
            proc.terminate()
            proc.wait(60)
    for c in configs:
        line = (
            f"{c.label:12s} median {statistics.median(c.rates):7.0f} req/s  min {min(c.rates):7.0f}  "
            f"max {max(c.rates):7.0f}  server CPU per request median {statistics.median(c.cpu_us):5.0f} us "
            f"({min(c.cpu_us):.0f}-{max(c.cpu_us):.0f})"
        )
        if c.label in ratios:
            r = ratios[c.label]
            line += f"  rate / {base} median {statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
        print(line)
    if args.json:
        figures = {c.label: {"rates": c.rates, "cpu_us": c.cpu_us, "command": c.command} for c in configs}
        settings = {
            key: value if isinstance(value, (int, float, list)) else str(value) for key, value in vars(args).items()
        }
        report = {"args": settings, "base": base, "configs": figures, "ratios": ratios}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
