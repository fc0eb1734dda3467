"""--gpu-memory-bytes: the server refuses to start, with the numbers, when the sessions cannot fit.

The check counts on any device (so it runs here on the CPU): weights from the file, activations from onnx's
shape inference for the largest batch.
"""

from __future__ import annotations

import pytest

from cnnserve.repository import read_model
from cnnserve.server.memory import MemoryBudgetError, peak_activation_bytes, session_need
from cnnserve.service.errors import InvalidArgument
from support import ServerThread, write_model

# tiny_onnx: uint8 [28, 28, 1] -> Cast (float 3136 B) -> Div (3136 B) -> Reshape -> MatMul [10] ...: the
# largest node is Div or Reshape, 3136 B in and 3136 B out per sample.
TINY_PEAK = 2 * 28 * 28 * 4


def test_a_sessions_need_is_its_weights_and_its_largest_batchs_activations(tmp_path):
    write_model(tmp_path, "m", max_batch_size=8)
    (spec,) = read_model(tmp_path, "m")
    assert peak_activation_bytes(spec.model_file) == TINY_PEAK
    need = session_need(spec)
    assert need.weights == spec.model_file.stat().st_size
    assert need.total == need.weights + 8 * TINY_PEAK
    assert "m v1:" in need.describe() and "batch 8 x 6.12 KiB activations" in need.describe()


def _needs(repo, *names):
    return sum(session_need(s).total for n in names for s in read_model(repo, n))


def test_the_server_refuses_to_start_when_the_models_do_not_fit(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "a", max_batch_size=8)
    write_model(repo, "b", max_batch_size=64, seed=1)
    total = _needs(repo, "a", "b")
    with pytest.raises(MemoryBudgetError) as err:
        ServerThread(repo, gpu_memory_bytes=total - 1).start()
    message = str(err.value)
    assert "more than --gpu-memory-bytes" in message and f"({total - 1} bytes) by 1 B" in message
    assert "b v1:" in message and "batch 64 x" in message and "a v1:" in message and "batch 8 x" in message


def test_models_that_fit_are_served(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "a", max_batch_size=8)
    server = ServerThread(repo, gpu_memory_bytes=_needs(repo, "a")).start()
    try:
        assert server.server.models.models["a"].state == "READY"
    finally:
        server.stop()


def test_a_model_added_later_that_does_not_fit_is_refused_and_the_others_keep_serving(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "a", max_batch_size=8)
    server = ServerThread(repo, gpu_memory_bytes=_needs(repo, "a") + 100).start()
    try:
        write_model(repo, "b", max_batch_size=8, seed=1)
        with pytest.raises(InvalidArgument, match="b beside the served models need at least"):
            server.call(server.server.models.load("b"))
        assert server.server.models.models["a"].state == "READY"
        assert server.server.models.models["b"].state == "UNAVAILABLE"
        server.call(server.server.models.load("a"))  # a reload of a replaces its own need: still fits
    finally:
        server.stop()


def test_without_the_setting_nothing_is_estimated(tmp_path, monkeypatch):
    repo = tmp_path / "models"
    write_model(repo, "a")
    calls = []
    monkeypatch.setattr("cnnserve.server.model_manager.session_need", lambda spec: calls.append(spec))
    server = ServerThread(repo).start()
    server.stop()
    assert calls == []
