"""`cnnserve serve --workers N`: several processes share one port; a plain server still refuses it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from support import ServerProcess, write_model


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
    settings = ServerSettings(model_repository=repo, host="127.0.0.1", grpc_port=proc.grpc_port, metrics_port=-1)

    async def start():
        server = CnnServer(settings)
        try:
            await server.start()
        finally:
            await server.stop(0)

    with pytest.raises((OSError, RuntimeError)):
        asyncio.run(start())
