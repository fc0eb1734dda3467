"""Shared fixtures: tiny ONNX model repositories built without TensorFlow, and in-process servers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from support import DIGITS, write_model


def pytest_ignore_collect(collection_path, config):
    """tests/compat imports tritonclient, whose protobuf symbols clash with ours: it runs in its own process
    (`pytest tests/compat`, as `make test` does)."""
    if collection_path.name == "compat" and not any("compat" in str(arg) for arg in config.args):
        return True
    return None


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DIGITS)
    return data["x"], data["y"]


class ServerThread:
    """A real CnnServer on 127.0.0.1 port 0, run by its own event loop in a thread."""

    def __init__(self, repository: Path, **settings) -> None:
        from cnnserve.server.app import CnnServer
        from cnnserve.server.settings import ServerSettings

        self.settings = ServerSettings(
            model_repository=repository, host="127.0.0.1", grpc_port=0, metrics_port=0, **settings
        )
        self.server = CnnServer(self.settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced to the test in start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_until_complete(self.server.wait())

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.wait(120)
        if self._error is not None:
            raise self._error
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def call(self, coro, timeout: float = 60):
        """Run a coroutine on the server's loop (e.g. models.load) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(60)
            self._thread.join(30)
        self.loop.close()


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_model(repo, "tiny")
    write_model(repo, "slow", max_batch_size=8, delay_us=60_000_000)  # only a full batch runs
    write_model(repo, "bounded", max_batch_size=8, delay_us=60_000_000, queue_size=2)
    write_model(repo, "nometa", metadata=False)
    return repo


@pytest.fixture
def server(model_repo: Path):
    thread = ServerThread(model_repo).start()
    yield thread
    thread.stop()
