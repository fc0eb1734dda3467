"""`cnnserve serve --workers N`: several processes share one port; a plain server still refuses it."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request

import numpy as np
import pytest

from support import Load, ServerProcess, wait_until, write_model


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    repo = tmp_path_factory.mktemp("workers") / "models"
    write_model(repo, "tiny")
    proc = ServerProcess(repo, "--workers", "2", "--uvloop").start()
    yield repo, proc
    assert proc.terminate() == 0


def test_workers_share_the_port_and_answer(workers, digits):
    from cnnserve.client import CnnserveClient

    _, proc = workers
    images = digits[0][:3].reshape(3, 28, 28, 1)
    for _ in range(4):  # one connection each: the kernel spreads them over the workers
        with CnnserveClient(proc.address, timeout=30) as client:
            client.wait_ready()
            out = client.infer("tiny", {"images": images})["probabilities"]
            assert out.shape == (3, 10)
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_a_plain_server_cannot_bind_the_workers_port(workers):
    from cnnserve.server.app import CnnServer
    from cnnserve.server.settings import ServerSettings

    repo, proc = workers
    settings = ServerSettings(
        model_repository=repo, host="127.0.0.1", grpc_port=proc.grpc_port, metrics_port=-1, http_port=-1
    )

    async def start():
        server = CnnServer(settings)
        try:
            await server.start()
        finally:
            await server.stop(0)

    with pytest.raises((OSError, RuntimeError)):
        asyncio.run(start())


def _worker_pids(proc: ServerProcess) -> set[int]:
    """The worker processes of a `--workers` server (spawned children, not multiprocessing's helpers)."""
    import psutil

    pids = set()
    for child in psutil.Process(proc.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in part for part in child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:  # exited (or a zombie the parent has not reaped yet): not a worker any more
            pass
    return pids


def _metrics(proc: ServerProcess) -> dict[str, float]:
    """The metrics port's samples, keyed by sample name and labels as Prometheus writes them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=30).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


OK_INFER = 'cnnserve_requests_total{code="OK",method="ModelInfer"}'


def test_metrics_cover_every_worker(workers):
    """16 connections (spread over both workers by the kernel), 3 calls each: the metrics port counts all 48,
    not one worker's share."""
    from cnnserve.client import CnnserveClient

    _, proc = workers
    before = _metrics(proc).get(OK_INFER, 0)
    for _ in range(16):
        with CnnserveClient(proc.address, timeout=30) as client:
            for _ in range(3):
                client.infer("tiny", {"images": np.zeros((1, 28, 28, 1), np.uint8)})
    samples = _metrics(proc)
    assert samples[OK_INFER] - before == 48
    assert samples["cnnserve_workers"] == 2
    assert 'cnnserve_inference_total{model="tiny",version="1"}' in samples


@pytest.mark.timeout(300)
def test_a_killed_worker_is_restarted_while_the_others_answer(tmp_path):
    """SIGKILL one of two workers under load from 4 connections: the only failures are UNAVAILABLE (calls on
    the dead worker's connections), a new worker takes the slot, and every connection is answered after;
    counters never go backwards."""
    write_model(tmp_path, "tiny")
    proc = ServerProcess(tmp_path, "--workers", "2").start()
    try:
        pids = _worker_pids(proc)
        assert len(pids) == 2
        with Load(proc.address, "tiny", threads=4) as load:
            wait_until(lambda: load.total() >= 200, "load running")
            counted = _metrics(proc)[OK_INFER]
            os.kill(min(pids), signal.SIGKILL)
            wait_until(lambda: len(_worker_pids(proc) - pids) == 1, "a new worker")
            wait_until(lambda: _metrics(proc)["cnnserve_workers"] == 2, "the new worker serving")
            answered = load.total()
            wait_until(lambda: load.total() >= answered + 200, "load answered after the restart")
        assert {code for code, _ in load.errors} <= {"UNAVAILABLE"}, load.errors
        samples = _metrics(proc)
        assert samples["cnnserve_worker_restarts_total"] == 1
        assert samples[OK_INFER] >= counted
        assert proc.proc.poll() is None
    finally:
        assert proc.terminate() == 0


def test_too_many_worker_exits_stop_the_server_non_zero(tmp_path):
    """Both workers killed with a limit of one restart per minute: the server gives up and exits 1."""
    write_model(tmp_path, "tiny")
    proc = ServerProcess(tmp_path, "--workers", "2", "--worker-restarts-per-minute", "1").start()
    try:
        for pid in _worker_pids(proc):
            os.kill(pid, signal.SIGKILL)
        assert proc.proc.wait(120) == 1
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()


def test_every_worker_serves_http_on_the_shared_port(workers):
    """Requests over fresh HTTP connections spread over both workers: their statistics (per process) differ."""
    from support import Http

    _, proc = workers
    port = proc.ready["http_port"]
    assert port > 0
    body = {"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [0] * 784}]}
    for _ in range(20):
        with Http(port) as http:
            assert http.json("POST", "/v2/models/tiny/infer", body)[0] == 200
    counts = set()
    for _ in range(20):
        with Http(port) as http:
            stats = http.json("GET", "/v2/models/tiny/stats")[1]["model_stats"][0]
            counts.add((stats["inference_count"], stats["last_inference"]))
    assert len(counts) >= 2  # two processes answered, each with its own share and time of the 20 requests
