"""Access and limits over HTTP: bearer tokens (401), TLS with the gRPC port's certificate, 429 at the admission
limit and for a full queue, 504 for Triton's timeout parameter, request counts by route and status."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request

import pytest

from cnnserve.client import CnnserveClient
from support import Http, ServerThread, wait_until, write_model, write_pki


def _body(n: int = 1, **parameters) -> dict:
    body = {"inputs": [{"name": "images", "shape": [n, 28, 28, 1], "datatype": "UINT8", "data": [0] * (784 * n)}]}
    if parameters:
        body["parameters"] = parameters
    return body


def test_bearer_tokens_guard_every_route_but_health(tmp_path):
    write_model(tmp_path, "m")
    thread = ServerThread(tmp_path, auth_tokens="s3cret").start()
    try:
        with Http(thread.server.http_port) as http:
            assert http.call("GET", "/v2/health/ready")[0] == 200
            assert http.call("GET", "/openapi.json")[0] == 200
            status, head, data = http.call("GET", "/v2/models/m")
            assert status == 401 and head["www-authenticate"].startswith("Bearer")
            assert "missing bearer token" in json.loads(data)["error"]
            status, answer = http.json("POST", "/v2/models/m/infer", _body(), {"Authorization": "Bearer wrong"})
            assert status == 401 and "invalid bearer token" in answer["error"]
            status, answer = http.json("POST", "/v2/models/m/infer", _body(), {"Authorization": "Bearer s3cret"})
            assert status == 200 and answer["outputs"][0]["shape"] == [1, 10]
    finally:
        thread.stop()


def test_tls_with_the_same_certificate_as_grpc(tmp_path):
    (tmp_path / "pki").mkdir()
    pki = write_pki(tmp_path / "pki")
    repo = tmp_path / "models"
    write_model(repo, "m")
    thread = ServerThread(repo, tls_cert=pki / "server.pem", tls_key=pki / "server.key").start()
    try:
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with Http(thread.server.http_port, context=context) as https:
            status, answer = https.json("POST", "/v2/models/m/infer", _body())
            assert status == 200 and answer["model_name"] == "m"
        with pytest.raises(ssl.SSLError):  # a client that does not trust the CA is refused
            Http(thread.server.http_port, context=ssl.create_default_context()).call("GET", "/v2")
    finally:
        thread.stop()


def _blocked(port: int, results: list, body: dict) -> threading.Thread:
    def run():
        try:
            results.append(Http(port, timeout=120).json("POST", "/v2/models/slow/infer", body))
        except OSError as exc:
            results.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_full_queue_and_the_admission_limit_answer_429(tmp_path):
    write_model(tmp_path, "slow", max_batch_size=8, delay_us=60_000_000, queue_size=2)  # only a full batch runs
    thread = ServerThread(tmp_path, max_concurrent_calls=3).start()
    port = thread.server.http_port
    results: list = []
    try:
        waiting = [_blocked(port, results, _body(1)) for _ in range(2)]
        wait_until(lambda: thread.server.models.get("slow").batcher.queued_samples == 2, "two samples queued")
        with Http(port) as http:
            status, answer = http.json("POST", "/v2/models/slow/infer", _body(1))
            assert status == 429 and "queue" in answer["error"]
            waiting.append(_blocked(port, results, _body(1, timeout=60_000_000)))  # admitted, refused by the queue
            wait_until(lambda: len(results) == 1, "the third refused")
            assert results[0][0] == 429
            thread.server.gate.limit = 2  # both queued calls are in flight: the next one is over the limit
            status, answer = http.json("POST", "/v2/models/slow/infer", _body(1))
            assert status == 429 and "admission limit of 2" in answer["error"]
            assert http.call("GET", "/v2/health/ready")[0] == 200  # health is never limited
    finally:
        thread.stop(grace=0.5)
    assert thread.server.metrics.http_count("POST /v2/models/{name}/infer", "429") == 3


def test_triton_timeout_parameter_answers_504(tmp_path):
    write_model(tmp_path, "slow", max_batch_size=8, delay_us=60_000_000)
    thread = ServerThread(tmp_path).start()
    try:
        with Http(thread.server.http_port) as http:
            status, answer = http.json("POST", "/v2/models/slow/infer", _body(1, timeout=100_000))  # 0.1 s
            assert status == 504 and "deadline" in answer["error"]
            (stats,) = http.json("GET", "/v2/models/slow/stats")[1]["model_stats"]
            assert stats["expired"] == 1 and stats["execution_count"] == 0  # never computed
    finally:
        thread.stop()


def test_http_requests_are_counted_by_route_and_status(tmp_path):
    write_model(tmp_path, "m")
    thread = ServerThread(tmp_path).start()
    try:
        with Http(thread.server.http_port) as http:
            for _ in range(3):
                http.json("POST", "/v2/models/m/infer", _body())
            http.call("GET", "/v2/models/nope")
        text = urllib.request.urlopen(f"http://127.0.0.1:{thread.server.metrics_port}/metrics", timeout=10).read()
        text = text.decode()
        assert 'cnnserve_http_requests_total{route="POST /v2/models/{name}/infer",status="200"} 3.0' in text
        assert 'cnnserve_http_requests_total{route="GET /v2/models/{name}",status="404"} 1.0' in text
        with CnnserveClient(thread.address) as client:  # gRPC keeps its own counts beside
            client.infer("m", {"images": __import__("numpy").zeros((1, 28, 28, 1), "uint8")})
        assert thread.server.metrics.count("ModelInfer", "OK") == 1
    finally:
        thread.stop()
