"""The HTTP area's fixtures: a server shared by the read-only tests of a module (gRPC and HTTP on port 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import Http, ServerThread, write_model


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("shared") / "models"
    write_model(repo, "tiny")
    write_model(repo, "nometa", metadata=False)
    write_model(repo, "single", max_batch_size=0)
    return repo


@pytest.fixture(scope="module")
def shared_server(shared_repo: Path):
    thread = ServerThread(shared_repo).start()
    yield thread
    thread.stop()


@pytest.fixture
def http(shared_server):
    with Http(shared_server.server.http_port) as client:
        yield client
