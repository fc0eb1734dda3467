"""`cnnserve bench --protocol http`: pre-serialised KServe v2 REST requests on raw keep-alive connections.

No HTTP library on the load path: each request is built once as the exact bytes of an HTTP/1.1 POST (JSON
body, or Triton's binary tensor data extension), and a connection sends it and reads the answer's status line,
headers and Content-Length body. So the client costs the server nothing a real HTTP client would not, and
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


class Connection:
    """One keep-alive connection; ``exchange`` sends a request and reads its whole answer."""

    def __init__(self, target: str) -> None:
        self.host, self.port = host_port(target)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes, timeout: float) -> int:
        try:
            return await asyncio.wait_for(self._exchange(request), timeout)
        except TimeoutError:
            self.close()
            return HTTP_BASE + 504
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return CONNECT_ERROR

    async def _exchange(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close, chunked = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                close = True
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True  # peers answer so (KServe's binary outputs); ours sends Content-Length
        if chunked:
            await self._read_chunks()
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return 0 if status == 200 else HTTP_BASE + status

    async def _read_chunks(self) -> None:
        """Skip a chunked body: size lines and chunks up to the zero-size one, then the (empty) trailer."""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            await self.reader.readexactly(size + 2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


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
