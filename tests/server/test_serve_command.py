"""`cnnserve serve` as a real process: ready line, message-size limit, SIGTERM with requests in flight."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.client import CnnserveClient
from support import ServerProcess, write_model


def test_sigterm_finishes_in_flight_requests_and_exits_cleanly(tmp_path):
    # A 2 s batching window: requests sent before SIGTERM are still queued when it arrives.
    write_model(tmp_path, "m", max_batch_size=64, delay_us=2_000_000)
    server = ServerProcess(tmp_path, "--grace-seconds", "20").start()
    try:
        with CnnserveClient(server.address, timeout=30) as client:
            health = health_pb2_grpc.HealthStub(client.channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = [
                    pool.submit(client.infer, "m", {"images": np.zeros((1, 28, 28, 1), np.uint8)}) for _ in range(4)
                ]
                # Wait until the server has accepted all four (they sit in the 2 s batching window).
                for _ in range(400):
                    text = _metrics(server.metrics_port)
                    if 'cnnserve_queue_samples{model="m",version="1"} 4.0' in text:
                        break
                server.proc.send_signal(15)
                results = [f.result(30) for f in futures]
        assert all(r["probabilities"].shape == (1, 10) for r in results)
        assert server.proc.wait(30) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_messages_above_the_limit_are_refused(tmp_path):
    write_model(tmp_path, "m")
    server = ServerProcess(tmp_path, "--max-message-bytes", "4096").start()
    try:
        with CnnserveClient(server.address, timeout=10) as client:
            try:
                client.infer("m", {"images": np.zeros((8, 28, 28, 1), np.uint8)})
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            else:
                raise AssertionError("a 6 KB message passed a 4 KB limit")
            assert client.infer("m", {"images": np.zeros((1, 28, 28, 1), np.uint8)})["probabilities"].shape == (1, 10)
    finally:
        assert server.terminate() == 0


def _metrics(port: int) -> str:
    import time
    import urllib.request

    time.sleep(0.01)
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
