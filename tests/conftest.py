"""Fixtures of every area; the helpers themselves are in support.py (tests/ is on sys.path through this file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support import DIGITS, ServerThread, write_model

# Areas that run in a process of their own (`pytest tests/NAME`, as `make test` does), unless named:
# tests/compat imports tritonclient, whose protobuf symbols clash with ours; tests/console drives Chromium
# through Playwright's sync API, which holds an event loop running on the main thread for the whole
# session, so every later asyncio.run() in the same process would fail.
OWN_PROCESS = ("compat", "console")


def pytest_ignore_collect(collection_path, config):
    name = collection_path.name
    if name in OWN_PROCESS and not any(name in str(arg) for arg in config.args):
        return True
    return None


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(DIGITS)
    return data["x"], data["y"]


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory) -> Path:
    """What the read-only tests call: a batching model, one without metadata, one without a batch dimension."""
    repo = tmp_path_factory.mktemp("shared") / "models"
    write_model(repo, "tiny")
    write_model(repo, "nometa", metadata=False)
    write_model(repo, "single", max_batch_size=0)
    return repo


@pytest.fixture(scope="module")
def shared_server(shared_repo: Path):
    """One server (gRPC and HTTP on port 0) for a module's read-only tests; they assert on answers, never on
    its counters. Used by tests/server and tests/http."""
    thread = ServerThread(shared_repo).start()
    yield thread
    thread.stop()
