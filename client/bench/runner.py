"""Runs the levels of a benchmark: spawn client processes, cut windows, stop when stable, collect figures."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import grpc
import numpy as np

from cnnserve.client.bench.http import HttpServerStats, build_http_requests, http_model_inputs
from cnnserve.client.bench.payload import CHANNEL_OPTIONS, InputSpec, build_requests, model_inputs
from cnnserve.client.bench.stats import ServerStats, is_stable, stats_delta, summarise
from cnnserve.client.bench.worker import WorkerSpec, worker_main


@dataclass
class BenchConfig:
    """One benchmark run against one model: a list of concurrency levels or of request rates."""

    target: str
    model: str
    version: str = ""
    concurrency: list[int] = field(default_factory=list)  # closed loop, one level each
    rates: list[float] = field(default_factory=list)  # open loop (requests/s), one level each
    arrival: str = "constant"  # open loop: constant or poisson
    images_per_request: int = 1
    processes: int = 2
    channels: int = 1  # per process
    warmup_s: float = 2.0
    window_s: float = 3.0
    stable_windows: int = 3
    stability: float = 0.10
    max_windows: int = 8
    duration_s: float = 0.0  # > 0: fixed duration, no stability search
    timeout_s: float = 30.0  # deadline of every request
    inputs: list[InputSpec] | None = None  # None: from ModelMetadata
    label: str = ""
    seed: int = 0
    protocol: str = "grpc"  # or "http": KServe v2 REST
    http_body: str = "binary"  # with http: "binary" (Triton's binary tensor data extension) or "json"

    def levels(self) -> list[tuple[str, float]]:
        if self.concurrency and self.rates:
            raise ValueError("give concurrency levels or request rates, not both")
        if self.concurrency:
            return [("concurrency", c) for c in self.concurrency]
        if self.rates:
            return [("rate", r) for r in self.rates]
        raise ValueError("give at least one concurrency level or request rate")


Progress = Callable[[str], None]


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class _Level:
    """One level: its client processes, the record stream and the window cuts."""

    def __init__(self, cfg: BenchConfig, requests: list[bytes], kind: str, value: float) -> None:
        self.cfg, self.kind, self.value = cfg, kind, value
        ctx = mp.get_context("spawn")  # a fresh interpreter: no gRPC state inherited from this process
        self.out, self.ready, self.go, self.stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
        if kind == "concurrency":
            shares = [s for s in _split(int(value), cfg.processes) if s > 0]
            specs = [
                WorkerSpec(
                    i, cfg.target, requests, cfg.timeout_s, concurrency=s, channels=cfg.channels, protocol=cfg.protocol
                )
                for i, s in enumerate(shares)
            ]
        else:
            n = cfg.processes
            specs = [
                WorkerSpec(
                    i,
                    cfg.target,
                    requests,
                    cfg.timeout_s,
                    rate=value / n,
                    arrival=cfg.arrival,
                    phase_s=i / value,
                    channels=cfg.channels,
                    seed=cfg.seed,
                    protocol=cfg.protocol,
                )
                for i in range(n)
            ]
        self.procs = [
            ctx.Process(target=worker_main, args=(s, self.out, self.ready, self.stop, self.go)) for s in specs
        ]
        self.ends: list[np.ndarray] = []
        self.lats: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.done: dict[int, dict] = {}

    def start(self) -> float:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.ready.get(timeout=60)
        go = time.monotonic() + 1.0  # every process connects its channels before this
        for _ in self.procs:
            self.go.put(go)
        return go

    def drain(self, until: float) -> None:
        """Take records until the monotonic time ``until``."""
        while True:
            left = until - time.monotonic()
            try:
                msg = self.out.get(timeout=max(left, 0.0)) if left > 0 else self.out.get_nowait()
            except queue.Empty:
                return
            self._take(msg)

    def _take(self, msg) -> None:
        if msg[0] == "records":
            _, _, ends, lats, codes = msg
            self.ends.append(ends)
            self.lats.append(lats)
            self.codes.append(codes)
        elif msg[0] == "done":
            self.done[msg[1]] = msg[2]
        elif msg[0] == "failed":
            raise RuntimeError(f"client process {msg[1]} failed: {msg[2]}")

    def finish(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + self.cfg.timeout_s + 30
        try:
            while len(self.done) < len(self.procs) and time.monotonic() < deadline:
                try:
                    self._take(self.out.get(timeout=0.5))
                except queue.Empty:
                    if not any(p.is_alive() for p in self.procs):
                        break
        finally:
            for p in self.procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        if len(self.done) < len(self.procs):
            raise RuntimeError(f"only {len(self.done)} of {len(self.procs)} client processes reported their counts")

    def window(self, start: float, end: float) -> dict:
        ends, lats, codes = self.arrays()
        mask = (ends >= start) & (ends < end)
        return summarise(lats[mask], codes[mask], end - start, self.cfg.images_per_request)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.ends) > 1:  # keep one array per stream so repeated cuts stay cheap
            self.ends = [np.concatenate(self.ends)]
            self.lats = [np.concatenate(self.lats)]
            self.codes = [np.concatenate(self.codes)]
        if not self.ends:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int16)
        return self.ends[0], self.lats[0], self.codes[0]


def run_level(cfg: BenchConfig, requests: list[bytes], stats: ServerStats, kind: str, value: float, progress: Progress):
    level = _Level(cfg, requests, kind, value)
    total_before = stats.snapshot()
    go = level.start()
    grace = 0.45  # records reach the parent within the workers' flush interval
    t = go + cfg.warmup_s
    windows, snaps, bounds = [], [], []
    try:
        level.drain(t)
        snaps.append(stats.snapshot())
        bounds.append(t)
        n_windows = max(1, round(cfg.duration_s / cfg.window_s)) if cfg.duration_s else cfg.max_windows
        window_s = cfg.duration_s / n_windows if cfg.duration_s else cfg.window_s
        stable = False
        for k in range(n_windows):
            t_end = t + window_s
            level.drain(t_end)
            snaps.append(stats.snapshot())
            bounds.append(t_end)
            level.drain(t_end + grace)
            w = level.window(t, t_end)
            windows.append(w)
            lat = w["latency_ms"] or {}
            progress(
                f"  {kind} {value:g} window {k + 1}/{n_windows}: {w['requests_per_s']:.1f} req/s, "
                f"{w['images_per_s']:.1f} img/s, p50 {lat.get('p50', float('nan')):.2f} ms, "
                f"p99 {lat.get('p99', float('nan')):.2f} ms, errors {sum(w['errors'].values())}"
            )
            t = t_end
            if not cfg.duration_s and is_stable(windows, cfg.stable_windows, cfg.stability):
                stable = True
                break
    finally:
        level.finish()
    total_after = stats.snapshot()
    used = len(windows) if cfg.duration_s or not stable else cfg.stable_windows
    first = len(windows) - used
    measured = level.window(bounds[first], bounds[-1])
    counts = {key: sum(d[key] for d in level.done.values()) for key in ("sent", "ok", "errors")}
    return {
        kind: value,
        "stable": stable if not cfg.duration_s else None,
        **measured,
        "server": stats_delta(snaps[first], snaps[-1]),
        "windows": windows,
        "totals": {
            **counts,
            "error_codes": level.window(-np.inf, np.inf)["errors"],
            "server": stats_delta(total_before, total_after),
            "client_cpu_s": round(sum(d["cpu_s"] for d in level.done.values()), 3),
            "send_lag_p99_ms": max(d["send_lag_p99_ms"] for d in level.done.values()),
            "send_lag_max_ms": max(d["send_lag_max_ms"] for d in level.done.values()),
        },
    }


def _run_levels(cfg: BenchConfig, levels, requests, stats, progress) -> tuple[list[dict], float]:
    started = time.time()
    results = []
    for kind, value in levels:
        progress(f"{cfg.label or cfg.target} {cfg.model}: {kind} {value:g}")
        results.append(run_level(cfg, requests, stats, kind, value, progress))
    return results, started


def run(cfg: BenchConfig, progress: Progress = lambda _line: None) -> dict:
    """Run every level of ``cfg``; returns the result document (see README of the bench tool)."""
    levels = cfg.levels()
    if cfg.protocol == "http":
        inputs = cfg.inputs or http_model_inputs(cfg.target, cfg.model, cfg.version)
        requests = build_http_requests(
            cfg.target,
            cfg.model,
            inputs,
            cfg.images_per_request,
            version=cfg.version,
            binary=cfg.http_body == "binary",
            seed=cfg.seed,
        )
        stats = HttpServerStats(cfg.target, cfg.model, cfg.version)
        results, started = _run_levels(cfg, levels, requests, stats, progress)
    else:
        with grpc.insecure_channel(cfg.target, options=CHANNEL_OPTIONS) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            inputs = cfg.inputs
            if inputs is None:
                try:
                    inputs = model_inputs(channel, cfg.model, cfg.version)
                except grpc.RpcError as exc:
                    raise RuntimeError(
                        f"ModelMetadata for {cfg.model!r} failed ({exc.code().name}: {exc.details()}); "
                        "pass --inputs NAME:DATATYPE:DIMS to describe the input by hand"
                    ) from exc
            requests = build_requests(cfg.model, inputs, cfg.images_per_request, version=cfg.version, seed=cfg.seed)
            stats = ServerStats(channel, cfg.model, cfg.version)
            results, started = _run_levels(cfg, levels, requests, stats, progress)
    config = asdict(cfg)
    config["inputs"] = [asdict(i) for i in inputs]
    return {
        "tool": "cnnserve bench",
        "label": cfg.label or cfg.target,
        "started_unix": round(started, 3),
        "config": config,
        "request_bytes": len(requests[0]),
        "server_statistics": stats.available,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()),
        },
        "levels": results,
    }
