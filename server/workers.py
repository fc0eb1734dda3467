"""`cnnserve serve --workers N`: N server processes sharing the gRPC and HTTP ports (SO_REUSEPORT), supervised.

One Python process tops out at one core of event loop; the kernel spreads new connections over the
listening sockets of the N processes. Each worker loads its own sessions and batchers, so statistics
(ModelStatistics) are per process: a call reports the worker its connection reached.

Supervision: a worker that exits while the server runs (killed, crashed) is started again in its slot, after a
backoff (0.5 s, doubling with each of the slot's exits in the last minute, at most 10 s); its clients see
UNAVAILABLE on that connection and reconnect to the others, which answer throughout. More than
``worker_restarts_per_minute`` exits within a minute means something is wrong that restarting will not fix:
the server stops every worker and exits non-zero.

Metrics: each worker serves its own Prometheus endpoint on 127.0.0.1 (an ephemeral port); the parent serves
the metrics port, and on each scrape sums every worker's samples by name and labels (``MetricsAggregate``).
Counters stay monotonic across a restart: the last values scraped from a worker that exited are kept and
added. The parent adds ``cnnserve_workers`` (workers serving now) and ``cnnserve_worker_restarts_total``.

SO_REUSEPORT is enabled only here: a plain `cnnserve serve` keeps ``grpc.so_reuseport`` at 0 so that a
second server cannot silently bind a port that is already in use. The parent holds a bound (not listening)
reservation socket with SO_REUSEPORT per port (gRPC, and HTTP unless disabled) for the whole run, which also
picks the port when 0 is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue
import signal
import socket
import threading
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from cnnserve.server.settings import ServerSettings
from cnnserve.service.bootstrap import run_loop, serve_until_signal

log = logging.getLogger(__name__)

BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
RESTART_WINDOW_SECONDS = 60.0


class WorkersFailed(RuntimeError):
    """The workers could not be kept serving: one failed before it was ready, or too many restarts."""


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


class MetricsAggregate(Collector):
    """The workers' metrics as one endpoint: each scrape reads every worker's and sums samples by name and
    labels (``_created`` timestamps dropped). A worker's counters are kept at their last scraped values when
    it exits (``retire``), so sums never go backwards."""

    def __init__(self) -> None:
        self.ports: dict[int, int] = {}  # slot -> metrics port of the worker serving there now
        self.restarts = 0
        self._retired: dict[tuple, float] = defaultdict(float)  # counter samples of exited workers
        self._last: dict[int, dict[tuple, float]] = {}  # slot -> its worker's counter samples, last scrape
        self._lock = threading.Lock()

    def retire(self, slot: int) -> None:
        with self._lock:
            self.ports.pop(slot, None)
            for key, value in self._last.pop(slot, {}).items():
                self._retired[key] += value

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            ports = dict(self.ports)
        families: dict[str, Metric] = {}
        sums: dict[tuple, float] = defaultdict(float)
        for slot, port in ports.items():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError as exc:  # exiting or restarting: its last counters are still added below
                log.warning("worker %d's metrics unreadable: %s", slot, exc)
                continue
            counters = {}
            for family in text_string_to_metric_families(text):
                families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    sums[key] += sample.value
                    if family.type == "counter":
                        counters[key] = sample.value
            with self._lock:
                if slot in self.ports:
                    self._last[slot] = counters
        with self._lock:
            for key, value in self._retired.items():
                families.setdefault(key[0], Metric(key[0], "", "counter"))
                sums[key] += value
            serving, restarts = len(self.ports), self.restarts
        for (family, name, labels), value in sorted(sums.items()):
            families[family].add_sample(name, dict(labels), value)
        yield from families.values()
        workers = Metric("cnnserve_workers", "Server worker processes serving now", "gauge")
        workers.add_sample("cnnserve_workers", {}, serving)
        restarted = Metric("cnnserve_worker_restarts", "Server workers started again after they exited", "counter")
        restarted.add_sample("cnnserve_worker_restarts_total", {}, restarts)
        yield from (workers, restarted)


class Supervisor:
    """The worker processes: started, watched, restarted with backoff, and stopped."""

    def __init__(self, settings: ServerSettings, workers: int, port: int, http_port: int = -1) -> None:
        self.settings = settings
        self.count = workers
        self.port = port
        self.http_port = http_port
        self.ctx = mp.get_context("spawn")
        self.events = self.ctx.Queue()
        self.procs: dict[int, mp.Process] = {}
        self.ready: set[int] = set()
        self.exits: dict[int, deque] = defaultdict(deque)  # slot -> monotonic times of its exits
        self.all_exits: deque = deque()
        self.restart_at: dict[int, float] = {}
        self.metrics = MetricsAggregate() if settings.metrics_port >= 0 else None
        self.failed: str | None = None  # why a worker failed before it was ready

    def spawn(self, slot: int) -> None:
        update = {"grpc_port": self.port, "http_port": self.http_port, "reuse_port": True, "metrics_port": -1}
        if self.metrics is not None:
            update.update(metrics_port=0, metrics_host="127.0.0.1")
        worker_settings = self.settings.model_copy(update=update)
        proc = self.ctx.Process(target=_worker, args=(worker_settings.model_dump_json(), slot, self.events))
        proc.start()
        self.procs[slot] = proc

    def poll_events(self, timeout: float) -> None:
        """Take the workers' events that arrived within ``timeout`` (ready: its metrics port is read)."""
        try:
            kind, slot, _port, metrics_port = self.events.get(True, timeout)
        except queue.Empty:
            return
        if kind == "failed":
            log.error("server worker %d failed: %s", slot, _port)
            if slot not in self.ready:
                self.failed = f"server worker {slot} failed: {_port}"
            return
        self.ready.add(slot)
        if self.metrics is not None:
            with self.metrics._lock:
                self.metrics.ports[slot] = metrics_port

    def check(self) -> None:
        """Restart the slots whose worker exited, after their backoff; raise WorkersFailed past the limit."""
        now = time.monotonic()
        for slot, proc in list(self.procs.items()):
            if proc.is_alive() or slot in self.restart_at:
                continue
            self.ready.discard(slot)
            if self.metrics is not None:
                self.metrics.retire(slot)
            for times in (self.exits[slot], self.all_exits):
                times.append(now)
                while times and times[0] < now - RESTART_WINDOW_SECONDS:
                    times.popleft()
            limit = self.settings.worker_restarts_per_minute
            if len(self.all_exits) > limit:
                raise WorkersFailed(
                    f"server workers exited {len(self.all_exits)} times within a minute "
                    f"(limit {limit}, CNNSERVE_WORKER_RESTARTS_PER_MINUTE); stopping"
                )
            delay = min(BACKOFF_SECONDS * 2 ** (len(self.exits[slot]) - 1), MAX_BACKOFF_SECONDS)
            log.error("server worker %d exited with status %s; restarting it in %.1f s", slot, proc.exitcode, delay)
            self.restart_at[slot] = now + delay
        for slot, at in list(self.restart_at.items()):
            if at <= now:
                del self.restart_at[slot]
                self.spawn(slot)
                if self.metrics is not None:
                    self.metrics.restarts += 1

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker shuts down gracefully

    async def join(self) -> None:
        for proc in self.procs.values():
            await asyncio.to_thread(proc.join, self.settings.grace_seconds + 30)
            if proc.is_alive():
                proc.kill()


async def serve_workers(settings: ServerSettings, workers: int, on_ready) -> None:
    """Start ``workers`` processes on one gRPC and one HTTP port, call ``on_ready(grpc_port, metrics_port,
    http_port)``, keep them serving (restarting any that exits) until a signal; raises WorkersFailed past the
    restart limit."""
    reservation = reserve_port(settings.host, settings.grpc_port)
    port = reservation.getsockname()[1]
    http_reservation = reserve_port(settings.host, settings.http_port) if settings.http_port >= 0 else None
    http_port = http_reservation.getsockname()[1] if http_reservation is not None else -1
    pool = Supervisor(settings, workers, port, http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = None
    try:
        for slot in range(workers):
            pool.spawn(slot)
        while len(pool.ready) < workers:
            await asyncio.to_thread(pool.poll_events, 1.0)
            if pool.failed:
                raise WorkersFailed(pool.failed)
            if stop.is_set() or any(not p.is_alive() for p in pool.procs.values()):
                raise WorkersFailed("a server worker exited before it was ready")
        metrics_port = -1
        if pool.metrics is not None:
            registry = CollectorRegistry()
            registry.register(pool.metrics)
            http, _thread = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
            metrics_port = http.server_port
        log.info("%d workers serving on %s: gRPC %d, HTTP %d", workers, settings.host, port, http_port)
        on_ready(port, metrics_port, http_port)
        while not stop.is_set():
            await asyncio.to_thread(pool.poll_events, 0.2)
            pool.check()
    finally:
        pool.stop()
        await pool.join()
        if http is not None:
            http.shutdown()
            http.server_close()
        reservation.close()
        if http_reservation is not None:
            http_reservation.close()
