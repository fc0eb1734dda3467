"""A small blocking client of cnnserve's HTTP front door (the image API and the explainer routes).

    with HttpClient("http://127.0.0.1:8000", token=...) as client:
        client.classify("mnist_cnn", png_bytes, top_k=3)       # {"model_name", "predictions": [...]}
        client.post_json("/v1/models/mnist_cnn/explain/heatmap", {"image": base64_png})

One keep-alive connection (http.client, standard library only); ``https://`` with ``tls_ca`` (and
``tls_cert``/``tls_key`` for mutual TLS); the token (or CNNSERVE_TOKEN) as ``Authorization: Bearer``.
A non-200 answer raises HttpCallError with the status and the server's ``error`` message.
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import quote, urlsplit

from cnnserve.protocol import env_token


class HttpCallError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def is_http(address: str) -> bool:
    return address.startswith(("http://", "https://"))


class HttpClient:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=str(tls_ca) if tls_ca else None)
            if tls_cert:
                context.load_cert_chain(str(tls_cert), str(tls_key) if tls_key else None)
            self.conn = http.client.HTTPSConnection(host, port or 443, timeout=timeout, context=context)
        else:
            self.conn = http.client.HTTPConnection(host, port or 80, timeout=timeout)
        token = token or env_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            try:
                message = json.loads(data)["error"]
            except (ValueError, KeyError, TypeError):
                message = data[:200].decode(errors="replace")
            raise HttpCallError(response.status, message)
        return data

    def get_json(self, path: str):
        return json.loads(self.call("GET", path))

    def post_json(self, path: str, value) -> dict:
        return json.loads(self.call("POST", path, json.dumps(value).encode(), {"Content-Type": "application/json"}))

    @staticmethod
    def model_path(prefix: str, model: str, version: str = "") -> str:
        return f"{prefix}/models/{quote(model, safe='')}" + (f"/versions/{quote(version, safe='')}" if version else "")

    def classify(self, model: str, image: bytes, *, top_k: int = 5, version: str = "") -> dict:
        kind = "image/jpeg" if image[:3] == b"\xff\xd8\xff" else "image/png"
        path = self.model_path("/v1", model, version) + f"/classify?top_k={int(top_k)}"
        return json.loads(self.call("POST", path, image, {"Content-Type": kind}))
