"""uvicorn's httptools protocol with the two things a serving front door needs that it lacks.

- Every refusal the parser makes (malformed request line, headers, chunked framing, a body longer than its
  Content-Length running into the next request) is answered with v2's JSON error, not text.
- A client that trickles its request (headers or body) or stalls is cut off: from the first byte of a request
  its whole body must arrive within ``request_timeout`` seconds, else it is answered 408 and the connection
  closed; a connection that never sends a request is closed after the keep-alive timeout. So a slow client
  never holds a worker or its memory for long.
"""

from __future__ import annotations

import asyncio

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


def error_response(status: int, message: str, *, close: bool = True) -> bytes:
    """A complete HTTP/1.1 response carrying ``{"error": message}``."""
    body = orjson.dumps({"error": message})
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    if close:
        head.append(b"connection: close\r\n")
    return b"".join([*head, b"\r\n", body])


class FrontDoorProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection. ``request_timeout`` is set on the class by the front door."""

    request_timeout: float = 30.0
    on_parse_error = None  # callable(): counts the refusal (metrics), set by the front door

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._headers_done = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # Idle from the start: a connection that never sends a request is closed like an idle keep-alive one.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.send_400_response("protocol upgrades (WebSocket, h2c) are not served here")
        except httptools.HttpParserError as exc:
            reason = str(exc) or type(exc).__name__
            self.send_400_response(
                f"malformed HTTP request ({reason}): check the request line, headers, "
                "chunked framing and Content-Length"
            )

    def send_400_response(self, msg: str) -> None:
        self._cancel_request_timer()
        if self.on_parse_error is not None:
            self.on_parse_error()
        self.transport.write(error_response(400, msg))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout, self._request_timed_out)

    def on_headers_complete(self) -> None:
        self._headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_request_timer()
        super().on_message_complete()

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._headers_done else None
        if cycle is not None and (cycle.response_complete or cycle.more_body is False):
            return  # the request arrived whole; its answer is on the way
        if cycle is None or not cycle.response_started:
            message = f"request not received within {self.request_timeout:g} s (slow or stalled client)"
            self.transport.write(error_response(408, message))
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()
