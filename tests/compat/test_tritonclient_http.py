"""Wire compatibility over HTTP: NVIDIA's tritonclient.http (sync and asyncio), unchanged, against a
`cnnserve serve` subprocess, binary tensor data (its default) and JSON alike."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from support import DIGITS, ServerProcess, write_model

MODEL = "tiny"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("models")
    write_model(repo, MODEL, max_batch_size=8, delay_us=500)
    write_model(repo, "other", max_batch_size=4)
    proc = ServerProcess(repo).start()
    yield proc
    assert proc.terminate() == 0


@pytest.fixture(scope="module")
def url(server) -> str:
    return f"127.0.0.1:{server.ready['http_port']}"


@pytest.fixture(scope="module")
def digits():
    data = np.load(DIGITS)
    return data["x"][:, :, :, None], data["y"]


def _input(module, batch: np.ndarray, binary: bool):
    inp = module.InferInput("images", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch, binary_data=binary)
    return inp


def test_health_metadata_config(url):
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_server_metadata()
    assert meta["name"] == "cnnserve" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == 8 and config["platform"] == "onnxruntime_onnx"
    assert config["input"][0]["data_type"] == "TYPE_UINT8"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_and_without_classification(url, digits, binary):
    x, _ = digits
    client = httpclient.InferenceServerClient(url)
    inp = _input(httpclient, x[:4], binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer(MODEL, [inp], outputs=[out], request_id="r1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (4, 10) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert result.get_response()["id"] == "r1"
    top = client.infer(
        MODEL, [inp], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)]
    )
    labels = top.as_numpy("probabilities")
    assert labels.shape == (4, 3)
    for row, entries in zip(probabilities, labels, strict=True):
        entries = [e.decode() if isinstance(e, bytes) else e for e in entries]
        assert [int(e.split(":")[1]) for e in entries] == list(np.argsort(-row)[:3])
    client.close()


def test_default_outputs_and_errors(url, digits):
    x, _ = digits
    client = httpclient.InferenceServerClient(url)
    result = client.infer(MODEL, [_input(httpclient, x[:2], True)])  # every output, binary by default
    assert result.as_numpy("probabilities").shape == (2, 10)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [_input(httpclient, x[:1], True)])
    bad = httpclient.InferInput("images", [1, 28, 28], "UINT8")
    bad.set_data_from_numpy(x[:1, :, :, 0])
    with pytest.raises(InferenceServerException, match="does not match the model's"):
        client.infer(MODEL, [bad])
    client.close()


def test_statistics_and_repository(url, digits):
    x, _ = digits
    client = httpclient.InferenceServerClient(url)
    client.infer("other", [_input(httpclient, x[:2], True)])
    stats = client.get_inference_statistics("other")
    (entry,) = stats["model_stats"]
    assert entry["name"] == "other" and entry["inference_count"] >= 2
    assert entry["inference_stats"]["success"]["count"] >= 1
    index = client.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} >= {(MODEL, "READY"), ("other", "READY")}
    client.unload_model("other")
    assert not client.is_model_ready("other")
    client.load_model("other")
    assert client.is_model_ready("other")
    client.close()


def test_aio_client(url, digits):
    x, _ = digits

    async def run():
        client = aiohttpclient.InferenceServerClient(url)
        try:
            assert await client.is_server_ready()
            meta = await client.get_model_metadata(MODEL)
            assert meta["name"] == MODEL
            results = await asyncio.gather(
                *(client.infer(MODEL, [_input(aiohttpclient, x[i : i + 1], i % 2 == 0)]) for i in range(8))
            )
            stats = await client.get_inference_statistics(MODEL)
            return [r.as_numpy("probabilities") for r in results], stats
        finally:
            await client.close()

    outputs, stats = asyncio.run(run())
    assert all(o.shape == (1, 10) for o in outputs)
    assert stats["model_stats"][0]["inference_count"] >= 8
