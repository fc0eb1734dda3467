"""One client process: a grpc.aio loop sending pre-serialised requests, closed-loop or open-loop.

Every completion is recorded as (completion time, latency, status code) with ``time.monotonic()``, which is
the same clock in every process on Linux, so the parent can cut windows across processes. Records go to
the parent in small numpy batches; the final message carries the exact counts.
"""

from __future__ import annotations

import asyncio
import os
import queue
import time
from dataclasses import dataclass

import grpc
import numpy as np

from cnnserve.client.bench.http import Connection
from cnnserve.client.bench.payload import CHANNEL_OPTIONS

METHOD = "/inference.GRPCInferenceService/ModelInfer"
CLIENT_ERROR = -1  # not a gRPC status: the call failed inside the client
FLUSH_S = 0.2


@dataclass(frozen=True)
class WorkerSpec:
    """What one process does: ``concurrency`` calls in flight (closed) or ``rate`` requests/s (open)."""

    index: int
    target: str
    requests: list[bytes]
    timeout_s: float
    concurrency: int = 0
    rate: float = 0.0
    arrival: str = "constant"  # or "poisson"
    phase_s: float = 0.0  # offset of the first send in open loop, so processes interleave
    max_outstanding: int = 4096
    channels: int = 1
    seed: int = 0
    protocol: str = "grpc"  # or "http": ``requests`` are whole HTTP/1.1 requests (client/bench/http.py)


class HttpStatus(Exception):
    """An HTTP answer other than 200, carried out of the call as its recorded code."""

    def __init__(self, code: int) -> None:
        self.code = code


class _Recorder:
    def __init__(self, out: queue.Queue, index: int) -> None:
        self.out, self.index = out, index
        self.ends: list[float] = []
        self.lats: list[float] = []
        self.codes: list[int] = []
        self.sent = self.ok = self.errors = 0

    def add(self, end: float, latency: float, code: int) -> None:
        self.ends.append(end)
        self.lats.append(latency)
        self.codes.append(code)
        if code == 0:
            self.ok += 1
        else:
            self.errors += 1

    def flush(self) -> None:
        if self.ends:
            self.out.put(
                (
                    "records",
                    self.index,
                    np.array(self.ends),
                    np.array(self.lats),
                    np.array(self.codes, dtype=np.int16),
                )
            )
            self.ends, self.lats, self.codes = [], [], []


async def _call(stub, request: bytes, timeout: float) -> int:
    try:
        await stub(request, timeout=timeout)
        return 0
    except grpc.aio.AioRpcError as exc:
        return exc.code().value[0]
    except HttpStatus as exc:
        return exc.code
    except Exception:  # noqa: BLE001 - counted, never raised: one bad call must not stop the load
        return CLIENT_ERROR


class _Load:
    """One process's load: the channels, the calls in flight (closed or open loop), the records."""

    def __init__(self, spec: WorkerSpec, out: queue.Queue, stop_event) -> None:
        self.spec = spec
        self.http = spec.protocol == "http"
        if self.http:  # a "stub" is a keep-alive connection; idle ones are reused, more are opened as needed
            self.channels = []
            self.idle: list[Connection] = []
            self.stubs = [self._http_call]
        else:
            self.channels = [
                grpc.aio.insecure_channel(spec.target, options=CHANNEL_OPTIONS) for _ in range(spec.channels)
            ]
            self.stubs = [
                c.unary_unary(METHOD, request_serializer=None, response_deserializer=None) for c in self.channels
            ]
        self.record = _Recorder(out, spec.index)
        self.stopping = asyncio.Event()
        self.lags: list[float] = []
        self._stop_event = stop_event

    async def watch(self) -> None:
        """Stop on the parent's word, or when the parent died (orphans must not keep loading the server)."""
        parent = os.getppid()
        while not self._stop_event.is_set() and os.getppid() == parent:
            await asyncio.sleep(FLUSH_S)
            self.record.flush()
        self.stopping.set()

    async def _http_call(self, request: bytes, timeout: float) -> int:
        connection = self.idle.pop() if self.idle else Connection(self.spec.target)
        code = await connection.exchange(request, timeout)
        if connection.writer is not None:
            self.idle.append(connection)
        if code:
            raise HttpStatus(code)
        return 0

    async def closed(self, slot: int) -> None:
        """One of ``concurrency`` callers: the next request as soon as the last one is answered."""
        stub, requests, k = self.stubs[slot % len(self.stubs)], self.spec.requests, slot
        while not self.stopping.is_set():
            request = requests[k % len(requests)]
            k += 1
            self.record.sent += 1
            t0 = time.monotonic()
            code = await _call(stub, request, self.spec.timeout_s)
            t1 = time.monotonic()
            self.record.add(t1, t1 - t0, code)

    async def opened(self, go_time: float) -> None:
        """Requests at the spec's rate (constant or Poisson gaps), whatever the answers take."""
        spec = self.spec
        rng = np.random.default_rng(spec.seed + spec.index)
        next_t = go_time + spec.phase_s
        inflight: set[asyncio.Task] = set()
        k = 0
        while not self.stopping.is_set():
            now = time.monotonic()
            if next_t > now:
                await asyncio.sleep(next_t - now)
                if self.stopping.is_set():
                    break
            if len(inflight) >= spec.max_outstanding:
                await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            self.lags.append(time.monotonic() - next_t)
            self.record.sent += 1
            stub, request = self.stubs[k % len(self.stubs)], spec.requests[k % len(spec.requests)]
            task = asyncio.create_task(self._one(stub, request, next_t))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            k += 1
            next_t += rng.exponential(1.0 / spec.rate) if spec.arrival == "poisson" else 1.0 / spec.rate
        if inflight:
            await asyncio.gather(*inflight)

    async def _one(self, stub, request: bytes, scheduled: float) -> None:
        code = await _call(stub, request, self.spec.timeout_s)
        t1 = time.monotonic()
        self.record.add(t1, t1 - scheduled, code)  # from the intended send time: no coordinated omission

    def totals(self) -> dict:
        lag = np.array(self.lags) if self.lags else np.zeros(1)
        return {
            "sent": self.record.sent,
            "ok": self.record.ok,
            "errors": self.record.errors,
            "cpu_s": time.process_time(),
            "send_lag_p99_ms": float(np.percentile(lag, 99) * 1e3),
            "send_lag_max_ms": float(lag.max() * 1e3),
        }


async def _run(spec: WorkerSpec, out: queue.Queue, stop_event, go_time: float) -> None:
    """Connect, wait for the shared start, load until told to stop, then report the exact totals."""
    load = _Load(spec, out, stop_event)
    for channel in load.channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    watcher = asyncio.create_task(load.watch())
    delay = go_time - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    if spec.concurrency:
        await asyncio.gather(*(load.closed(slot) for slot in range(spec.concurrency)))
    else:
        await load.opened(go_time)
    await watcher
    load.record.flush()
    for channel in load.channels:
        await channel.close()
    if load.http:
        for connection in load.idle:
            connection.close()
    out.put(("done", spec.index, load.totals()))


def worker_main(spec: WorkerSpec, out: queue.Queue, ready, stop_event, go) -> None:
    """Process entry point: report ready, wait for the shared start time, run until told to stop."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # the client works on the standard loop too
        loop_factory = None
    ready.put(spec.index)
    go_time = go.get()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_run(spec, out, stop_event, go_time))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the level
        out.put(("failed", spec.index, f"{type(exc).__name__}: {exc}"))
