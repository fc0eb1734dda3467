"""The HTTP area's fixtures: a client of the shared server (tests/conftest.py) on its HTTP port."""

from __future__ import annotations

import pytest

from support import Http


@pytest.fixture
def http(shared_server):
    with Http(shared_server.server.http_port) as client:
        yield client
