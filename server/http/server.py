"""The HTTP listener: uvicorn's httptools protocol (ours, ``FrontDoorProtocol``) on the server's own event loop.

uvicorn's ``Server`` is not used: it owns signals and the loop's life, which belong to ``CnnServer``. The
listener is a plain ``loop.create_server`` with uvicorn's protocol and shared connection state, so grpc.aio
and HTTP requests interleave on one loop and reach the same batchers.

    http = HttpListener(app, settings)
    port = await http.start()          # binds (TLS with the gRPC port's certificate when configured)
    await http.stop(grace)             # stop accepting, finish in-flight requests within grace, close
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import uvicorn
from uvicorn.server import ServerState

from cnnserve.server.http.protocol import FrontDoorProtocol

log = logging.getLogger(__name__)

BACKLOG = 4096


def ssl_context(cert: Path | None, key: Path | None, client_ca: Path | None) -> ssl.SSLContext | None:
    """The same certificate (and client CA, for mutual TLS) as the gRPC port; None for plaintext."""
    if cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(client_ca))
    return context


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket says TCP. Without it Nagle holds the answer's second write (the body after the headers) until
    # the client's delayed ACK, 40 ms later.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not bind HTTP port {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class HttpListener:
    def __init__(self, app, settings, *, on_parse_error=None) -> None:
        self.settings = settings
        # One protocol class per listener: its timeouts are this server's settings.
        protocol = type(
            "Protocol",
            (FrontDoorProtocol,),
            {"request_timeout": settings.http_request_timeout, "on_parse_error": staticmethod(on_parse_error)},
        )
        self.config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_keep_alive=int(settings.http_keepalive_timeout),
            server_header=False,
            date_header=False,
        )
        self.config.load()
        self.state = ServerState()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> int:
        s = self.settings
        sock = bind_socket(s.host, s.http_port, s.reuse_port)
        loop = asyncio.get_running_loop()
        protocol = self.config.http_protocol_class
        config, state = self.config, self.state
        self._server = await loop.create_server(
            lambda: protocol(config=config, server_state=state, app_state={}),
            sock=sock,
            ssl=ssl_context(s.tls_cert, s.tls_key, s.tls_client_ca),
            backlog=BACKLOG,
        )
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting; idle connections close now, busy ones after their answer; cancel what outlives grace."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.state.connections):
            connection.shutdown()
        deadline = asyncio.get_running_loop().time() + grace
        while self.state.tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.warning("HTTP: cancelling %d request(s) still running after %.1fs", len(self.state.tasks), grace)
                for task in list(self.state.tasks):
                    task.cancel()
                break
            await asyncio.wait(list(self.state.tasks), timeout=remaining)
        for connection in list(self.state.connections):
            connection.transport.close()
        self._server = None
