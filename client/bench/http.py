"""`cnnserve bench --protocol http`: pre-serialised KServe v2 REST requests on raw keep-alive connections.

No HTTP library on the load path: each request is built once as the exact bytes of an HTTP/1.1 POST (JSON
body, or Triton's binary tensor data extension), and a connection (an asyncio protocol, no stream reader and
no task per request) sends it and parses the answer's status line, Content-Length and body as they arrive. So the client costs the server nothing a real HTTP client would not, and
little CPU of its own. A non-200 answer is recorded as ``HTTP_BASE + status`` (``code_name`` shows HTTP_429).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np

from cnnserve.client.bench.payload import InputSpec, sample_tensors

HTTP_BASE = 1000  # recorded codes: 0 for 200, HTTP_BASE + status otherwise
CONNECT_ERROR = HTTP_BASE  # connection refused or lost before an answer


def host_port(target: str) -> tuple[str, int]:
    """``http://host:port`` or ``host:port`` -> (host, port)."""
    address = target.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _get_json(target: str, path: str, timeout: float = 10.0) -> dict:
    host, port = host_port(target)
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
        return json.loads(response.read())


def _model_path(model: str, version: str) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


def http_model_inputs(target: str, model: str, version: str = "") -> list[InputSpec]:
    try:
        meta = _get_json(target, _model_path(model, version))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"model metadata for {model!r} failed (HTTP {exc.code}: {exc.read()[:200]!r})") from exc
    return [InputSpec(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in meta["inputs"]]


def build_http_requests(
    target: str,
    model: str,
    inputs: list[InputSpec],
    images_per_request: int,
    *,
    version: str = "",
    binary: bool = True,
    variants: int = 8,
    seed: int = 0,
) -> list[bytes]:
    """``variants`` complete HTTP requests of ``images_per_request`` samples; outputs come back binary too."""
    host, port = host_port(target)
    path = _model_path(model, version) + "/infer"
    out = []
    for tensors in sample_tensors(inputs, images_per_request, variants=variants, seed=seed):
        header: dict = {"inputs": []}
        chunks = []
        for spec, data in tensors:
            entry = {"name": spec.name, "shape": list(data.shape), "datatype": spec.datatype}
            if binary:
                raw = np.ascontiguousarray(data).tobytes()
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = data.ravel().tolist()
            header["inputs"].append(entry)
        if binary:
            header["parameters"] = {"binary_data_output": True}
        head = json.dumps(header, separators=(",", ":")).encode()
        body = head + b"".join(chunks)
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
        if binary:
            lines += ["Content-Type: application/octet-stream", f"Inference-Header-Content-Length: {len(head)}"]
        else:
            lines.append("Content-Type: application/json")
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


def _chunked_end(buffer: bytearray, pos: int) -> int:
    """Where a chunked body starting at ``pos`` ends (after its trailer), or -1 while it is incomplete."""
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return -1
        size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            while True:  # trailer lines until the empty one
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    return -1
                if line_end == pos:
                    return pos + 2
                pos = line_end + 2
        if len(buffer) < pos + size + 2:
            return -1
        pos += size + 2


class _Answer(asyncio.Protocol):
    """One keep-alive connection as a protocol: the answer is parsed as its bytes arrive (no stream
    reader, no task per request): the status line, Content-Length, the body skipped."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")  # at a line start: not Inference-Header-Content-Length
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop > 0 else None])
        if b"\r\ntransfer-encoding:" in head and b"chunked" in head:  # peers answer so (KServe's binary outputs)
            stop = _chunked_end(self.buffer, end + 4)
            if stop < 0:
                return
        else:
            stop = end + 4 + length
            if len(self.buffer) < stop:
                return
        status = int(self.buffer[9:12])
        del self.buffer[:stop]
        if b"connection: close" in head:
            self.closed = True
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Connection:
    """One keep-alive connection; ``exchange`` sends a request and reads its whole answer."""

    def __init__(self, target: str) -> None:
        self.host, self.port = host_port(target)
        self.protocol: _Answer | None = None

    @property
    def writer(self):  # open (reusable) or not
        return None if self.protocol is None or self.protocol.closed else self.protocol

    async def exchange(self, request: bytes, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        try:
            if self.protocol is None or self.protocol.closed:
                _, self.protocol = await loop.create_connection(_Answer, self.host, self.port)
        except OSError:
            self.close()
            return CONNECT_ERROR
        protocol = self.protocol
        protocol.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, waiter.cancel)
        protocol.transport.write(request)
        try:
            status = await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                raise
            self.close()
            return HTTP_BASE + 504
        finally:
            timer.cancel()
        if status is None:
            self.close()
            return CONNECT_ERROR
        if protocol.closed:
            self.close()
        return 0 if status == 200 else HTTP_BASE + status

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


class HttpServerStats:
    """Triton's JSON statistics of one model, as the same snapshot dicts as the gRPC ``ServerStats``."""

    def __init__(self, target: str, model: str, version: str = "") -> None:
        self.target, self.path = target, _model_path(model, version) + "/stats"
        self.available = True

    def snapshot(self) -> dict | None:
        if not self.available:
            return None
        try:
            answer = _get_json(self.target, self.path, timeout=5)
        except urllib.error.HTTPError:
            self.available = False  # a server without the statistics extension
            return None
        if not answer.get("model_stats"):
            return None
        s = answer["model_stats"][0]
        stats = s["inference_stats"]
        return {
            "inference_count": s["inference_count"],
            "execution_count": s["execution_count"],
            "success": stats["success"]["count"],
            "fail": stats["fail"]["count"],
            "queue_ns": stats["queue"]["ns"],
            "queue_count": stats["queue"]["count"],
            "batches": {int(b["batch_size"]): (b["compute_infer"]["count"], b["compute_infer"]["ns"])
                        for b in s.get("batch_stats", [])},
        }  # fmt: skip
