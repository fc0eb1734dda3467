"""The front door's request and response values, shared by the application and its routes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson

from cnnserve.service.errors import InvalidArgument

JSON_HEADERS = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """A refusal with its HTTP status (and extra headers), raised by the front door itself."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class Request:
    method: str
    path: str
    scope: dict
    receive: Callable[[], Awaitable[dict]]
    max_body: int
    params: dict[str, str] = field(default_factory=dict)  # from the path: name, version
    _headers: dict[str, str] | None = None
    _query: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.scope["query_string"].decode("latin-1")))
        return self._query

    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def body(self) -> bytes:
        """The whole body, refused with 413 past the message limit (by Content-Length before reading it)."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise HttpError(413, f"request body of {declared} bytes is over the limit of {self.max_body} bytes")
        message = await self.receive()
        if message["type"] != "http.request":
            raise asyncio.CancelledError  # the client went away (or was cut off): nothing to answer
        body = message.get("body", b"")
        if not message.get("more_body", False):
            return body
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await self.receive()
            if message["type"] != "http.request":
                raise asyncio.CancelledError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(413, f"request body is over the limit of {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def int_query(self, key: str, default: int) -> int:
        value = self.query.get(key)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidArgument(f"query parameter {key!r} must be an integer, got {value!r}") from None

    def bool_query(self, key: str) -> bool:
        return self.query.get(key, "").lower() in ("1", "true", "yes")

    def deadline(self, timeout_us: int | None) -> float | None:
        """Event-loop time by which the answer is due: Triton's ``timeout`` (microseconds; 0 or unset: none)."""
        if not timeout_us:
            return None
        return asyncio.get_running_loop().time() + timeout_us / 1e6


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: JSON_HEADERS)


def json_response(value, status: int = 200, option: int = 0) -> Response:
    return Response(status, orjson.dumps(value, option=option))


def error(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, orjson.dumps({"error": message}), [*JSON_HEADERS, *(headers or [])])


@dataclass(frozen=True)
class Route:
    """A matched route: its handler, the label it is counted under, how it is gated."""

    handler: Callable[..., Awaitable[Response]]
    label: str
    admitted: str | None = None  # the admission method name (counted against the limit), None: not limited
    open: bool = False  # no token needed (health, the OpenAPI document, static files)
    gated: bool = True  # refused while draining


def b64decode(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise InvalidArgument(f"{what} is not valid base64") from None
