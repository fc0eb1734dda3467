"""The server area's fixtures: a server shared by the read-only tests of a module, and one per test for the
tests that count, fill queues or change the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import ServerThread, write_model


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
