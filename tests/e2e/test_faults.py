"""Faults under load: the explainer sidecar killed in the middle of a load test, then restarted."""

from __future__ import annotations

import threading
import time
from collections import Counter
from importlib.util import find_spec

import grpc
import numpy as np
import pytest

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.client import CnnserveClient
from cnnserve.client.cli import image_message
from support import ExplainerProcess, Load, ServerThread, add_keras_model, tiny_digit_model, wait_until, write_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(400),
    pytest.mark.skipif(find_spec("tensorflow") is None, reason="the sidecar needs the [explainer] extra"),
]


class Explaining:
    """One thread asking for heatmaps through the main server, counting outcomes."""

    def __init__(self, address: str) -> None:
        self.outcomes: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address,), daemon=True)

    def _run(self, address: str) -> None:
        request = pb.HeatmapRequest(model_name="digits", images=[image_message(np.zeros((28, 28), np.uint8))])
        with CnnserveClient(address, timeout=30) as client:
            stub = pb_grpc.ExplainerStub(client.channel)
            for _ in range(5000):
                if self._stop.is_set():
                    return
                try:
                    stub.Heatmap(request, timeout=30)
                    self.outcomes["OK"] += 1
                except grpc.RpcError as err:
                    self.outcomes[err.code().name] += 1
                    time.sleep(0.05)

    def __enter__(self) -> Explaining:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


def test_explainer_killed_during_load_costs_no_classification(tmp_path):
    repo = tmp_path / "models"
    add_keras_model(write_model(repo, "digits"), tiny_digit_model(seed=0))
    side = ExplainerProcess(repo).start()
    port = side.grpc_port
    server = ServerThread(repo, explainer_address=side.address).start()
    try:
        with Load(server.address, "digits") as load, Explaining(server.address) as explaining:
            wait_until(lambda: explaining.outcomes["OK"] >= 3 and load.total() > 100)
            side.kill()
            wait_until(lambda: explaining.outcomes["UNAVAILABLE"] >= 3)
            during = load.total()
            wait_until(lambda: load.total() > during + 100)  # classification goes on while the sidecar is down
            ok_before = explaining.outcomes["OK"]
            side = ExplainerProcess(repo, port=port).start()
            wait_until(lambda: explaining.outcomes["OK"] > ok_before)  # back, with nothing restarted on the server
        assert not load.errors, load.errors
        assert set(explaining.outcomes) <= {"OK", "UNAVAILABLE"}, explaining.outcomes
    finally:
        server.stop()
        if side.proc.poll() is None:
            side.terminate()
