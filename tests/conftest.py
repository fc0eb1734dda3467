"""Fixtures of every area; the helpers themselves are in support.py (tests/ is on sys.path through this file)."""

from __future__ import annotations

import numpy as np
import pytest

from support import DIGITS


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
