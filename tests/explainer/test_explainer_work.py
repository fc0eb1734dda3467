"""Bounded work in the sidecar: the admission queue in images, requests dropped before compute once their
caller left or their deadline passed, long requests stopped at a batch boundary, and the sidecar's metrics.

The sidecar runs in a thread of the test process, so a test can hold its one TensorFlow worker busy with an
event (``_hold``) and see the queue fill deterministically; calls go through real gRPC clients.
"""

from __future__ import annotations

import asyncio
import re
import threading
import urllib.request

import grpc
import numpy as np
import pytest

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.client.cli import image_message
from support import ServerThread, add_keras_model, tiny_digit_model, wait_until, write_model

pytestmark = pytest.mark.slow
TIMEOUT = 120


class SidecarThread:
    """A real ExplainerServer on 127.0.0.1 port 0 (metrics too), run by its own event loop in a thread."""

    def __init__(self, repository, **settings) -> None:
        from cnnserve.explainer.app import ExplainerServer
        from cnnserve.explainer.settings import ExplainerSettings

        self.server = ExplainerServer(
            ExplainerSettings(model_repository=repository, host="127.0.0.1", grpc_port=0, metrics_port=0, **settings)
        )
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._started.set()
        self.loop.run_until_complete(self.server.wait())

    def start(self) -> SidecarThread:
        self._thread.start()
        assert self._started.wait(120), "the sidecar did not start"
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def queue(self):
        return self.server.handler.queue

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1), self.loop).result(60)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("work") / "models"
    add_keras_model(write_model(root, "digits"), tiny_digit_model(seed=0))
    return root


@pytest.fixture
def sidecar(repo):
    thread = SidecarThread(repo, max_queued_images=8).start()
    yield thread
    thread.stop()


def _hold(sidecar: SidecarThread) -> threading.Event:
    """Occupy the sidecar's one worker until the returned event is set (requests queue behind it)."""
    gate = threading.Event()
    sidecar.server.handler._worker.submit(gate.wait, 120)
    return gate


def _heatmap(images: int, method: int = pb.HEATMAP_METHOD_GRADCAM) -> pb.HeatmapRequest:
    digits = [image_message(np.full((28, 28), 40 * i, np.uint8)) for i in range(images)]
    return pb.HeatmapRequest(model_name="digits", images=digits, method=method)


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()


def test_past_its_bound_the_queue_refuses_with_the_limit_named(sidecar, repo):
    """Bound 8 images: two waiting requests of 4 fill it; one more image is refused RESOURCE_EXHAUSTED at once,
    directly and through the main server; the waiting ones then complete; all of it on the metrics port."""
    channel = grpc.insecure_channel(sidecar.address)
    stub = pb_grpc.ExplainerStub(channel)
    main = ServerThread(repo, explainer_address=sidecar.address).start()
    gate = _hold(sidecar)
    try:
        waiting = [stub.Heatmap.future(_heatmap(4), timeout=TIMEOUT) for _ in range(2)]
        wait_until(lambda: sidecar.queue.images == 8, "8 images queued")
        with grpc.insecure_channel(main.address) as proxied:
            for target in (stub, pb_grpc.ExplainerStub(proxied)):
                with pytest.raises(grpc.RpcError) as err:
                    target.Heatmap(_heatmap(1), timeout=TIMEOUT)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                details = err.value.details()
                assert "limit of 8" in details and "CNNSERVE_EXPLAINER_MAX_QUEUED_IMAGES" in details, details
                assert "retry with backoff" in details, details
        text = _metrics(sidecar.server.metrics_port)
        assert "cnnserve_explainer_queue_images 8.0" in text and "cnnserve_explainer_queue_requests 2.0" in text
        gate.set()
        assert all(len(f.result().results) == 4 for f in waiting)
    finally:
        gate.set()
        channel.close()
        main.stop()
    text = _metrics(sidecar.server.metrics_port)
    assert 'cnnserve_requests_total{code="RESOURCE_EXHAUSTED",method="Heatmap"} 2.0' in text
    assert 'cnnserve_requests_total{code="OK",method="Heatmap"} 2.0' in text
    assert "cnnserve_explainer_queue_images 0.0" in text
    assert re.search(r'cnnserve_explainer_compute_seconds_total\{method="Heatmap"\} [1-9e.\-0]+', text), text


def test_requests_whose_caller_left_or_deadline_passed_are_never_computed(sidecar):
    """While the worker is held: one request's deadline passes, another's caller cancels it. Neither is
    computed (no compute seconds for Heatmap), both are counted as dropped, and the queue is empty after."""
    channel = grpc.insecure_channel(sidecar.address)
    stub = pb_grpc.ExplainerStub(channel)
    gate = _hold(sidecar)
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.Heatmap(_heatmap(2), timeout=1)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = stub.Heatmap.future(_heatmap(2), timeout=TIMEOUT)
        wait_until(lambda: sidecar.queue.requests == 1, "the second request queued")
        cancelled.cancel()
        wait_until(lambda: sum(sidecar.queue.dropped.values()) == 2, "both dropped")
        gate.set()
        wait_until(lambda: sidecar.queue.requests == 0, "the queue empty")
        assert "Heatmap" not in sidecar.queue.compute_seconds
        assert len(stub.Heatmap(_heatmap(1), timeout=TIMEOUT).results) == 1  # and the next one is computed
        assert "Heatmap" in sidecar.queue.compute_seconds
    finally:
        gate.set()
        channel.close()


def test_a_cancelled_long_request_stops_at_its_next_step(sidecar):
    """16 filters x 500 ascent steps, cancelled once it computes: it stops at a step boundary (counted as
    stopped) and stores no pattern, which it would have, had it run to the end."""
    channel = grpc.insecure_channel(sidecar.address)
    stub = pb_grpc.ExplainerStub(channel)
    try:
        slow = pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=list(range(16)), steps=500, seed=5)
        call = stub.FilterPatterns.future(slow, timeout=TIMEOUT)
        wait_until(lambda: sidecar.queue.computing == 1, "the ascent running")
        assert call.cancel()
        wait_until(lambda: sidecar.queue.requests == 0, "the ascent stopped")
        assert sidecar.queue.stopped == {"cancelled": 1}
        again = pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=[0], steps=500, seed=5)
        assert not stub.FilterPatterns(again, timeout=TIMEOUT).patterns[0].cached
    finally:
        channel.close()


def test_score_cam_stops_between_its_chunks():
    """cams.heatmaps calls ``stop`` at each Score-CAM chunk; when it raises, the work ends there."""
    from cnnserve.explainer import cams
    from cnnserve.explainer.graph import ExplainableModel

    model = ExplainableModel(tiny_digit_model(seed=0))
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("stop")

    pixels = np.zeros((3, 28, 28, 1), np.uint8)
    with pytest.raises(RuntimeError, match="stop"):
        cams.heatmaps(model, pixels, "conv2", "score_cam", None, 16, stop=stop)
    assert len(calls) == 2
