"""Malformed HTTP requests: each gets its status and a v2 JSON error, never a 500 or a dropped connection, and
a good request is answered right after it. Plus a property-based fuzz of the JSON infer body."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import Http, ServerThread, png_bytes, raw_http, write_model

MAX_BODY = 200_000
GOOD_IMAGE = [0] * 784


def req(method: str, path: str, body: bytes = b"", headers: dict | None = None, *, length: int | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: test"]
    for k, v in (headers or {}).items():
        head.append(f"{k}: {v}")
    if body or method == "POST":
        head.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def infer_json(**tensor) -> bytes:
    t = {"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": GOOD_IMAGE, **tensor}
    return json.dumps({"inputs": [{k: v for k, v in t.items() if v is not None}]}).encode()


def binary_infer(header: dict | None = None, tail: bytes = bytes(784), header_length: int | None = None):
    header = header or {
        "inputs": [
            {"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "parameters": {"binary_data_size": 784}}
        ]
    }
    head = json.dumps(header).encode()
    n = len(head) if header_length is None else header_length
    return req(
        "POST",
        "/v2/models/tiny/infer",
        head + tail,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": n},
    )


GOOD = req("POST", "/v2/models/tiny/infer", infer_json(), {"Content-Type": "application/json"})
INFER = "/v2/models/tiny/infer"

CASES = [
    ("malformed JSON", req("POST", INFER, b'{"inputs": [', {}), 400, "not valid JSON"),
    ("empty body", req("POST", INFER, b""), 400, "not valid JSON"),
    ("non-UTF-8 JSON", req("POST", INFER, b'{"id": "\xff\xfe", "inputs": []}'), 400, "not valid JSON"),
    ("deeply nested array", req("POST", INFER, b'{"inputs": [{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"), 400,
     "not valid JSON"),
    ("nested past numpy's dimensions", req("POST", INFER, infer_json(data=json.loads("[" * 80 + "1" + "]" * 80))), 400,
     "input 'images'"),
    ("NaN in an integer tensor", req("POST", INFER, infer_json().replace(b"[0, 0", b"[NaN, 0", 1)), 400, "not valid JSON"),
    ("a float in a UINT8 tensor", req("POST", INFER, infer_json(data=[0.5] * 784)), 400, "floating-point values"),
    ("a string in a UINT8 tensor", req("POST", INFER, infer_json(data=["a"] * 784)), 400, "string values"),
    ("a value out of UINT8's range", req("POST", INFER, infer_json(data=[300] * 784)), 400, "out of range"),
    ("a ragged nested array", req("POST", INFER, infer_json(data=[[1, 2], [3]])), 400, "not a regular array"),
    ("too few elements", req("POST", INFER, infer_json(data=[0] * 783)), 400, "783 elements"),
    ("wrong shape", req("POST", INFER, infer_json(shape=[1, 28, 28])), 400, "does not match the model's"),
    ("shape not integers", req("POST", INFER, infer_json(shape=["1", 28, 28, 1])), 400, "'shape' must be a list"),
    ("wrong datatype", req("POST", INFER, infer_json(datatype="FP32")), 400, "does not match the model's"),
    ("unknown datatype", req("POST", INFER, infer_json(datatype="FLOAT")), 400, "FLOAT"),
    ("no data", req("POST", INFER, infer_json(data=None)), 400, "no 'data'"),
    ("inputs not a list", req("POST", INFER, b'{"inputs": {"name": "images"}}'), 400, "'inputs' must be a non-empty list"),
    ("classification as a string", req("POST", INFER, json.dumps({**json.loads(infer_json()), "outputs": [
        {"name": "probabilities", "parameters": {"classification": "3"}}]}).encode()), 400, "must be an integer"),
    ("negative timeout", req("POST", INFER, json.dumps({**json.loads(infer_json()), "parameters": {"timeout": -5}})
        .encode()), 400, "timeout"),
    ("GET on infer", req("GET", INFER), 405, "use POST"),
    ("POST on model metadata", req("POST", "/v2/models/tiny", b"{}"), 405, "use GET"),
    ("unknown model", req("POST", "/v2/models/nope/infer", infer_json()), 404, "unknown model 'nope'"),
    ("unknown version", req("GET", "/v2/models/tiny/versions/7"), 404, "no version '7'"),
    ("unknown route", req("GET", "/v3/everything"), 404, "no route"),
    ("binary size past the body's end", binary_infer(tail=bytes(700)), 400, "runs past the binary data"),
    ("binary bytes beyond those declared", binary_infer(tail=bytes(900)), 400, "inputs declare 784"),
    ("binary size that lies about the shape", binary_infer(
        {"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8",
                     "parameters": {"binary_data_size": 700}}]}, tail=bytes(700)), 400, "700 bytes, expected 784"),
    ("huge Inference-Header-Content-Length", binary_infer(header_length=10**12), 400, "Inference-Header-Content-Length"),
    ("Inference-Header-Content-Length not a number", req("POST", INFER, infer_json(),
        {"Inference-Header-Content-Length": "abc"}), 400, "not an integer"),
    ("body over the limit", req("POST", INFER, bytes(16), length=MAX_BODY + 1) + bytes(MAX_BODY + 1 - 16), 413,
     "over the limit"),
    ("chunked body over the limit", b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n" + (b"%x\r\n" % 100_000 + bytes(100_000) + b"\r\n") * 3 + b"0\r\n\r\n", 413, "over the limit"),
    ("a GIF to classify", req("POST", "/v1/models/tiny/classify", b"GIF89a....", {"Content-Type": "image/gif"}), 415,
     "image/gif"),
    ("an empty image", req("POST", "/v1/models/tiny/classify", b"", {"Content-Type": "image/png"}), 400, "empty"),
    ("top_k not a number", req("POST", "/v1/models/tiny/classify?top_k=x", png_bytes(bytes(784) and __import__(
        "numpy").zeros((28, 28))), {"Content-Type": "image/png"}), 400, "top_k"),
    ("heatmap with invalid base64", req("POST", "/v1/models/tiny/explain/heatmap", b'{"image": "***"}',
        {"Content-Type": "application/json"}), 400, "base64"),
    ("heatmap with an unknown method", req("POST", "/v1/models/tiny/explain/heatmap",
        b'{"image": "iVBORw0K", "method": "magic"}', {"Content-Type": "application/json"}), 400, "unknown method"),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", 400, "malformed HTTP"),
    ("a header without a colon", b"GET /v2 HTTP/1.1\r\nHost: t\r\nthis is no header\r\n\r\n", 400, "malformed HTTP"),
    ("a bad chunk size", b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n", 400, "malformed HTTP"),
    ("a body longer than its Content-Length", req("POST", INFER, infer_json(), length=10), 400,
     ("malformed HTTP", "not valid JSON")),  # the excess parsed as the next request; whichever answer comes first
    ("a WebSocket upgrade", b"GET /v2 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400, "upgrades"),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("models")
    write_model(repo, "tiny")
    thread = ServerThread(repo, max_message_bytes=MAX_BODY, http_request_timeout=1.0).start()
    yield thread
    thread.stop()


@pytest.mark.parametrize(("name", "data", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_its_status_and_a_json_error(server, name, data, status, words):
    port = server.server.http_port
    (got, head, body), after = raw_http(port, data, then=GOOD)
    assert got == status, body
    assert head["content-type"] == "application/json"
    words = (words,) if isinstance(words, str) else words
    assert any(w in json.loads(body)["error"] for w in words)
    assert after is None or after[0] == 200  # the same connection serves on, or was closed after the answer
    assert raw_http(port, GOOD)[0] == 200  # and the server answers the next client at once


def test_the_malformed_cases_are_many_and_none_was_a_500(server):
    assert len(CASES) >= 25
    text = server.server.metrics.registry
    statuses = {s.labels["status"] for m in text.collect() if m.name == "cnnserve_http_requests" for s in m.samples}
    assert "500" not in statuses


@pytest.mark.parametrize(
    "partial",
    [b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nContent-Le", req("POST", INFER, b'{"inputs"', length=500)],
    ids=["headers trickled", "truncated body"],
)
def test_a_stalled_client_is_cut_off_with_408(server, partial):
    status, head, body = raw_http(server.server.http_port, partial)
    assert status == 408 and head["connection"] == "close"
    assert "slow or stalled client" in json.loads(body)["error"]
    assert raw_http(server.server.http_port, GOOD)[0] == 200


def test_an_idle_connection_is_closed(tmp_path):
    import socket

    write_model(tmp_path, "tiny")
    thread = ServerThread(tmp_path, http_keepalive_timeout=1.0).start()
    try:
        with socket.create_connection(("127.0.0.1", thread.server.http_port), timeout=30) as sock:
            assert sock.recv(1) == b""  # the server closed it: never sent a request
    finally:
        thread.stop()


_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["images", "pixels", ""]),
        "datatype": st.sampled_from(["UINT8", "FP32", "INT64", "BYTES", "FP16", "BOOL", "nope"]),
        "shape": st.one_of(st.lists(st.integers(-2, 40), max_size=5), st.just([1, 28, 28, 1]), st.text(max_size=3)),
    },
    optional={
        "data": st.one_of(
            st.lists(st.integers(-(2**70), 2**70), max_size=20),
            st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20),
            st.lists(st.text(max_size=3), max_size=5),
            st.lists(st.lists(st.integers(0, 255), max_size=3), max_size=3),
            st.just(GOOD_IMAGE),
            st.booleans(),
            st.none(),
        ),
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "other"]), st.one_of(st.integers(-5, 5000), st.text(max_size=2))
        ),
    },
)
_body = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(_tensor, max_size=3), st.integers(), st.text(max_size=3))},
    optional={
        "id": st.one_of(st.text(max_size=5), st.integers()),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["probabilities", "x"])},
                optional={"parameters": st.dictionaries(
                    st.sampled_from(["classification", "binary_data"]),
                    st.one_of(st.integers(-3, 20), st.booleans(), st.text(max_size=2)))},
            ),
            max_size=2,
        ),
        "parameters": st.dictionaries(
            st.sampled_from(["timeout", "binary_data_output"]), st.one_of(st.integers(-5, 10**7), st.booleans())
        ),
    },
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_body, tail=st.one_of(st.none(), st.binary(max_size=900)))
def test_fuzzed_json_infer_bodies_get_200_or_a_json_4xx(server, body, tail):
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if tail is not None:
        headers["Inference-Header-Content-Length"] = str(len(data))
        data += tail
    with Http(server.server.http_port) as http:
        status, head, answer = http.call("POST", INFER, data, headers)
        assert status in (200, 400, 404, 504), answer
        if status != 200:
            assert isinstance(json.loads(answer)["error"], str)
        assert http.call("POST", INFER, infer_json(), {"Content-Type": "application/json"})[0] == 200


def test_binary_lengths_are_read_from_the_header_not_trusted(server):
    """A valid binary request, with BYTES-style framing in the tail ignored: the sizes come from the header."""
    tail = struct.pack("<I", 5) + bytes(780)
    status, _, body = raw_http(server.server.http_port, binary_infer(tail=tail))
    assert status == 200, body
