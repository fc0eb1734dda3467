"""Forwarding to a sidecar that is down: every concurrent call is UNAVAILABLE with the reason, none INTERNAL.

No TensorFlow here: nothing listens at the sidecar's address (a port bound, then closed)."""

from __future__ import annotations

import socket
import threading

import grpc

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from support import ServerThread, write_model


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_concurrent_calls_to_a_down_sidecar_are_all_unavailable(tmp_path):
    """One call giving up closes the shared channel; the calls still waiting on it must say UNAVAILABLE too
    (they were INTERNAL: grpc's UsageError "Channel is closed" escaped), as the console's four heatmaps do."""
    write_model(tmp_path / "models", "digits")
    server = ServerThread(tmp_path / "models", explainer_address=f"127.0.0.1:{_closed_port()}").start()
    codes: list[tuple[str, str]] = []
    started = threading.Barrier(12)

    def call() -> None:
        with grpc.insecure_channel(server.address) as channel:
            started.wait()
            try:
                pb_grpc.ExplainerStub(channel).ListLayers(pb.ListLayersRequest(model_name="digits"), timeout=60)
            except grpc.RpcError as err:
                codes.append((err.code().name, err.details()))

    try:
        # Twelve calls at once: when the first gives up on the shared channel, the others are still waiting on it.
        threads = [threading.Thread(target=call) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        server.stop()
    assert len(codes) == 12
    assert {code for code, _ in codes} == {"UNAVAILABLE"}, codes
    assert all("explainer sidecar" in details and "unreachable" in details for _, details in codes)
