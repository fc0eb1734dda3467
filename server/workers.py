"""`cnnserve serve --workers N`: N server processes sharing one gRPC port through SO_REUSEPORT.

One Python process tops out at one core of event loop; the kernel spreads new connections over the
listening sockets of the N processes. Each worker loads its own sessions and batchers, so statistics
(ModelStatistics) are per process, and only worker 0 serves the Prometheus endpoint.

SO_REUSEPORT is enabled only here: a plain `cnnserve serve` keeps ``grpc.so_reuseport`` at 0 so that a
second server cannot silently bind a port that is already in use. The parent holds a bound (not listening)
reservation socket with SO_REUSEPORT for the whole run, which also picks the port when 0 is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue
import signal
import socket

from cnnserve.server.settings import ServerSettings
from cnnserve.service.bootstrap import run_loop, serve_until_signal

log = logging.getLogger(__name__)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: fixes the port (0 picks one); gets no connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(settings_json: str, index: int, events: mp.Queue) -> None:
    from cnnserve.server.app import CnnServer

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker{index} %(name)s: %(message)s")
    settings = ServerSettings.model_validate_json(settings_json)

    server = CnnServer(settings)

    def ready() -> None:
        events.put(("ready", index, server.grpc_port, server.metrics_port))

    try:
        # SIGINT is the parent's to decide on (it sends SIGTERM to every worker).
        run_loop(serve_until_signal(server, ready, ignore=(signal.SIGINT,)), settings.uvloop)
    except BaseException as exc:
        events.put(("failed", index, f"{type(exc).__name__}: {exc}", 0))
        raise


async def serve_workers(settings: ServerSettings, workers: int, on_ready) -> None:
    """Start ``workers`` processes on one port, call ``on_ready(grpc_port, metrics_port)``, stop on signal."""
    reservation = reserve_port(settings.host, settings.grpc_port)
    port = reservation.getsockname()[1]
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = []
    for i in range(workers):
        worker_settings = settings.model_copy(
            update={"grpc_port": port, "reuse_port": True, "metrics_port": settings.metrics_port if i == 0 else -1}
        )
        procs.append(ctx.Process(target=_worker, args=(worker_settings.model_dump_json(), i, events), daemon=False))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for p in procs:
            p.start()
        metrics_port = -1
        ready = 0
        while ready < workers:
            try:
                kind, index, a, b = await asyncio.to_thread(events.get, True, 1.0)
            except queue.Empty:
                if stop.is_set() or any(not p.is_alive() for p in procs):
                    raise RuntimeError("a server worker exited before it was ready") from None
                continue
            if kind == "failed":
                raise RuntimeError(f"server worker {index} failed: {a}")
            ready += 1
            if index == 0:
                metrics_port = b
        log.info("%d workers serving on %s:%d", workers, settings.host, port)
        on_ready(port, metrics_port)
        while not stop.is_set() and all(p.is_alive() for p in procs):
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each worker shuts down gracefully
        for p in procs:
            await asyncio.to_thread(p.join, settings.grace_seconds + 30)
            if p.is_alive():
                p.kill()
        reservation.close()
