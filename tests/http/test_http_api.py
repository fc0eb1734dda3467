"""The HTTP front door with a real server and plain HTTP: v2 REST routes, JSON infer, the image API, errors."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnserve.client import CnnserveClient
from support import Http, ServerThread, png_bytes, write_model


def _infer_body(images: np.ndarray, **extra) -> dict:
    return {
        "inputs": [
            {"name": "images", "shape": list(images.shape), "datatype": "UINT8", "data": images.ravel().tolist()}
        ],
        **extra,
    }


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)


def test_health_and_server_metadata(http):
    assert http.call("GET", "/v2/health/live")[0] == 200
    assert http.call("GET", "/v2/health/ready")[0] == 200
    status, meta = http.json("GET", "/v2")
    assert status == 200 and meta["name"] == "cnnserve"
    assert {"binary_tensor_data", "classification", "statistics", "model_repository"} <= set(meta["extensions"])


def test_model_metadata_ready_and_config(http):
    status, meta = http.json("GET", "/v2/models/tiny")
    assert status == 200
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert http.json("GET", "/v2/models/tiny/versions/1")[1] == meta
    assert http.call("GET", "/v2/models/tiny/ready")[0] == 200
    assert http.call("GET", "/v2/models/tiny/versions/1/ready")[0] == 200
    status, config = http.json("GET", "/v2/models/tiny/config")
    assert status == 200 and config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [28, 28, 1] and config["input"][0]["data_type"] == "TYPE_UINT8"


def test_json_infer_matches_grpc(http, shared_server):
    images = _images(3)
    status, answer = http.json("POST", "/v2/models/tiny/infer", _infer_body(images, id="req-7"))
    assert status == 200
    assert answer["model_name"] == "tiny" and answer["model_version"] == "1" and answer["id"] == "req-7"
    (out,) = answer["outputs"]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [3, 10]
    with CnnserveClient(shared_server.address, timeout=30) as client:
        expected = client.infer("tiny", {"images": images})["probabilities"]
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(3, 10), expected, rtol=1e-6)


def test_nested_json_data_and_classification(http):
    images = _images(1)
    body = _infer_body(images, outputs=[{"name": "probabilities", "parameters": {"classification": 3}}])
    body["inputs"][0]["data"] = images.tolist()  # nested row-major
    status, answer = http.json("POST", "/v2/models/tiny/infer", body)
    assert status == 200
    (out,) = answer["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 3]
    score, index, label = out["data"][0].split(":")
    assert label == f"class_{index}" and 0 < float(score) < 1


def test_stats_and_repository_index(http):
    status, stats = http.json("GET", "/v2/models/tiny/stats")
    assert status == 200
    (entry,) = stats["model_stats"]
    assert entry["name"] == "tiny" and entry["version"] == "1"
    assert set(entry["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    assert {"count", "ns"} == set(entry["inference_stats"]["success"])
    status, every = http.json("GET", "/v2/models/stats")
    assert status == 200 and {s["name"] for s in every["model_stats"]} == {"tiny", "nometa", "single"}
    status, index = http.json("POST", "/v2/repository/index")
    assert status == 200
    assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index


def test_classify_route_with_the_input_as_the_model_saw_it(http):
    rng = np.random.default_rng(1)
    image = png_bytes(rng.integers(0, 256, size=(56, 40, 3)))  # colour, other size: grey and resized
    status, head, data = http.call(
        "POST", "/v1/models/tiny/classify?top_k=3&include_input=1", image, {"Content-Type": "image/png"}
    )
    assert status == 200, data
    answer = json.loads(data)
    assert answer["model_name"] == "tiny" and len(answer["predictions"]) == 3
    assert all(set(p) == {"index", "label", "score"} for p in answer["predictions"])
    seen = np.array(Image.open(io.BytesIO(base64.b64decode(answer["input_png"]))))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    status, _, data = http.call("POST", "/v1/models/tiny/versions/1/classify", image, {"Content-Type": "image/png"})
    assert status == 200 and len(json.loads(data)["predictions"]) == 5  # the default top_k


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "words"),
    [
        ("GET", "/v2/models/nope", None, {}, 404, "unknown model 'nope'"),
        ("GET", "/v2/models/tiny/versions/9", None, {}, 404, "no version '9'"),
        ("GET", "/v2/nothing", None, {}, 404, "no route"),
        ("GET", "/v2/models/tiny/infer", None, {}, 405, "use POST"),
        ("POST", "/v2/models/tiny", b"{}", {}, 405, "use GET"),
        ("POST", "/v2/models/tiny/infer", b"{not json", {}, 400, "not valid JSON"),
        ("POST", "/v2/models/tiny/infer", b"[1, 2]", {}, 400, "must be a JSON object"),
        ("POST", "/v2/models/tiny/infer", b'{"inputs": []}', {}, 400, "'inputs' must be a non-empty list"),
        ("POST", "/v1/models/tiny/classify", b"GIF89a", {"Content-Type": "image/gif"}, 415, "image/gif"),
        ("POST", "/v1/models/tiny/classify", b"not a png", {"Content-Type": "image/png"}, 400, "image"),
        ("POST", "/v1/models/nometa/classify", png_bytes(np.zeros((28, 28))), {"Content-Type": "image/png"}, 400,
         "preprocessing"),
        ("GET", "/v1/models/tiny/explain/layers", None, {}, 503, "explainer"),
    ],
)  # fmt: skip
def test_errors_are_v2_json_with_their_status(http, method, path, body, headers, status, words):
    got, head, data = http.call(method, path, body, headers)
    assert got == status, data
    assert head["content-type"] == "application/json"
    assert words in json.loads(data)["error"]
    assert http.call("GET", "/v2/health/ready")[0] == 200  # the same connection serves on


def test_wrong_shape_and_datatype_are_400(http):
    body = _infer_body(_images(1))
    body["inputs"][0]["shape"] = [1, 28, 28]
    status, answer = http.json("POST", "/v2/models/tiny/infer", body)
    assert status == 400 and "does not match the model's" in answer["error"]
    body = _infer_body(_images(1))
    body["inputs"][0]["datatype"] = "FP32"
    status, answer = http.json("POST", "/v2/models/tiny/infer", body)
    assert status == 400 and "datatype" in answer["error"]
    body = _infer_body(_images(1))
    body["inputs"][0]["data"] = body["inputs"][0]["data"][:-1]
    status, answer = http.json("POST", "/v2/models/tiny/infer", body)
    assert status == 400 and "783 elements" in answer["error"]


def test_the_openapi_document_lists_the_routes(http):
    status, doc = http.json("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in ("/v2/models/{name}/infer", "/v1/models/{name}/classify", "/v1/models/{name}/explain/heatmap"):
        assert path in doc["paths"]


def test_a_static_folder_mounts_at_a_path(shared_server, tmp_path):
    from cnnserve.server.http import mount_static

    (tmp_path / "index.html").write_text("<h1>console</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    mount_static(shared_server.server.front_door, "/static-test", tmp_path)
    with Http(shared_server.server.http_port) as http:
        status, head, data = http.call("GET", "/static-test/")
        assert status == 200 and data == b"<h1>console</h1>" and head["content-type"].startswith("text/html")
        status, head, data = http.call("GET", "/static-test/app.js")
        assert status == 200 and "javascript" in head["content-type"]
        assert http.call("GET", "/static-test/../conftest.py")[0] == 404
        assert http.call("GET", "/static-test/missing.css")[0] == 404
        assert http.call("GET", "/static-test")[0] == 307


def test_http_and_grpc_requests_land_on_the_same_batcher(tmp_path):
    """A batch only runs full (8 samples, 60 s window): 4 samples over HTTP and 4 over gRPC make one batch."""
    import concurrent.futures

    write_model(tmp_path, "slow", max_batch_size=8, delay_us=60_000_000)
    thread = ServerThread(tmp_path).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool, CnnserveClient(thread.address, timeout=60) as client:
            over_http = pool.submit(
                lambda: Http(thread.server.http_port, timeout=60).json(
                    "POST", "/v2/models/slow/infer", _infer_body(_images(4))
                )
            )
            over_grpc = pool.submit(client.infer, "slow", {"images": _images(4, seed=1)})
            status, answer = over_http.result(60)
            assert status == 200 and answer["outputs"][0]["shape"] == [4, 10]
            assert over_grpc.result(60)["probabilities"].shape == (4, 10)
        with Http(thread.server.http_port) as http:
            (stats,) = http.json("GET", "/v2/models/slow/stats")[1]["model_stats"]
        assert stats["execution_count"] == 1 and stats["inference_count"] == 8
        assert stats["batch_stats"][0]["batch_size"] == 8
        assert thread.server.metrics.http_count("POST /v2/models/{name}/infer", "200") == 1
    finally:
        thread.stop()


def test_draining_answers_503_and_health_says_not_ready(tmp_path):
    write_model(tmp_path, "m")
    thread = ServerThread(tmp_path).start()
    try:
        with Http(thread.server.http_port) as http:
            assert http.json("POST", "/v2/models/m/infer", _infer_body(_images(1)))[0] == 200
            thread.server.gate.draining = True
            thread.server.state.ready = False
            status, answer = http.json("POST", "/v2/models/m/infer", _infer_body(_images(1)))
            assert status == 503 and "shutting down" in answer["error"]
            status, answer = http.json("GET", "/v2/health/ready")
            assert status == 503 and "shutting down" in answer["error"]
            assert http.call("GET", "/v2/health/live")[0] == 200
    finally:
        thread.stop()


def test_http_port_minus_one_disables_http(tmp_path):
    write_model(tmp_path, "m")
    thread = ServerThread(tmp_path, http_port=-1).start()
    try:
        assert thread.server.http is None and thread.server.http_port == -1
    finally:
        thread.stop()


def test_the_image_health_probe_speaks_http(shared_server):
    from cnnserve.healthcheck import main

    url = f"http://127.0.0.1:{shared_server.server.http_port}"
    assert main(["--quiet", url]) == 0
    assert main(["--quiet", "--live", url]) == 0
    assert main(["--quiet", "--timeout", "2", "http://127.0.0.1:1"]) == 1  # nothing listens there


def test_answers_are_not_held_by_nagle(shared_server):
    """Accepted connections have TCP_NODELAY: the body's write after the headers' is not held for the client's
    delayed ACK (40 ms a request, before the listening socket named IPPROTO_TCP)."""
    import socket

    with Http(shared_server.server.http_port) as http:
        assert http.call("GET", "/v2/health/ready")[0] == 200
        (connection,) = [c for c in shared_server.server.http.state.connections]
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
