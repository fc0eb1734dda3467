"""The HTTP front door's ASGI application: routing, access, admission, bodies and statuses around the handlers.

No framework: a request is matched by splitting its path (no regular expressions, no per-request validation
layer), its body read once with the size limit, and the handler's plain result rendered with orjson. Every
failure is v2's ``{"error": "..."}`` with the status of ``STATUS_OF`` and counted by route and status.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import grpc

from cnnserve.server.http import routes
from cnnserve.server.http.messages import HttpError, Request, Response, Route, error
from cnnserve.service.access import token_is_valid
from cnnserve.service.errors import ServingError

log = logging.getLogger(__name__)

# gRPC status of a ServingError -> HTTP status (Triton's choices where it has one).
STATUS_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class FrontDoor:
    """The ASGI callable. ``server`` is the CnnServer (models, handlers, gate, state, metrics, settings)."""

    def __init__(self, server, tokens: tuple[bytes, ...]) -> None:
        self.server = server
        self.tokens = tokens
        self.max_body = server.settings.max_message_bytes
        self.routes = routes.Routes(server)
        self.static: list[tuple[str, Path, str]] = []  # (path prefix, folder, index file)
        self.redirect_root: str | None = None

    def mount_static(self, prefix: str, folder: Path, *, index: str = "index.html", redirect_root: bool = False):
        """Serve the files under ``folder`` at ``prefix`` (GET/HEAD, open without a token); ``redirect_root``:
        ``/`` redirects there."""
        prefix = "/" + prefix.strip("/")
        self.static.append((prefix, Path(folder).resolve(), index))
        if redirect_root:
            self.redirect_root = prefix + "/"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        request = Request(method, path, scope, receive, self.max_body)
        label = "unmatched"
        try:
            route = self.match(request)
            label = route.label
            response = await self._serve(route, request)
        except asyncio.CancelledError:
            self.server.metrics.http_request(label, "499")
            return
        except HttpError as exc:
            response = error(exc.status, exc.message, exc.headers)
        except ServingError as exc:
            response = error(STATUS_OF.get(exc.code, 500), exc.message)
        except Exception as exc:  # noqa: BLE001 - answered 500 with a request id, logged in full
            request_id = uuid.uuid4().hex[:12]
            log.error("HTTP %s %s failed unexpectedly (request id %s)", method, path, request_id, exc_info=exc)
            response = error(500, f"internal error; request id {request_id} is in the server log")
        self.server.metrics.http_request(label, str(response.status))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [*response.headers, (b"content-length", b"%d" % len(response.body))],
            }
        )
        await send({"type": "http.response.body", "body": response.body if method != "HEAD" else b""})

    async def _serve(self, route: Route, request: Request) -> Response:
        if not route.open and self.tokens:
            self._check_token(request)
        gate = self.server.gate
        if not route.gated:
            return await route.handler(request)
        refused = gate.enter(route.admitted or "")
        if refused is not None:
            code, message = refused
            raise HttpError(STATUS_OF.get(code, 503), message)
        try:
            return await route.handler(request)
        finally:
            gate.leave(route.admitted or "")

    def _check_token(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if not token_is_valid(header, self.tokens):
            reason = "missing bearer token" if not header else "invalid bearer token"
            raise HttpError(401, f"{reason}: send the header 'Authorization: Bearer <token>'", [
                (b"www-authenticate", b'Bearer realm="cnnserve"')
            ])  # fmt: skip

    def match(self, request: Request) -> Route:
        route = self.routes.match(request)
        if route is not None:
            return route
        if request.path == "/" and self.redirect_root is not None:
            return Route(self._redirect, "GET /", open=True, gated=False)
        for prefix, folder, index in self.static:
            if request.path == prefix or request.path.startswith(prefix + "/"):
                return Route(self._static_handler(prefix, folder, index), f"GET {prefix}", open=True, gated=False)
        raise HttpError(404, f"no route {request.path!r}; see /openapi.json for the routes served")

    async def _redirect(self, request: Request) -> Response:
        return Response(307, b"", [(b"location", self.redirect_root.encode())])

    def _static_handler(self, prefix: str, folder: Path, index: str):
        async def serve_file(request: Request) -> Response:
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"{request.method} is not allowed on {request.path}; use GET", [
                    (b"allow", b"GET, HEAD")
                ])  # fmt: skip
            if request.path == prefix:
                return Response(307, b"", [(b"location", (prefix + "/").encode())])
            relative = request.path[len(prefix) + 1 :] or index
            target = (folder / relative).resolve()
            if not target.is_relative_to(folder):
                raise HttpError(404, f"no file {request.path!r}")
            if target.is_dir():
                target = target / index
            if not target.is_file():
                raise HttpError(404, f"no file {request.path!r}")
            data = await asyncio.to_thread(target.read_bytes)
            return Response(200, data, [(b"content-type", _content_type(target).encode())])

        return serve_file


def _content_type(path: Path) -> str:
    import mimetypes

    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return kind + ("; charset=utf-8" if kind.startswith("text/") or kind.endswith(("javascript", "json")) else "")


def mount_static(app: FrontDoor, prefix: str, folder: Path, *, redirect_root: bool = False) -> None:
    """Serve ``folder`` at ``prefix`` on this front door (the console's hook: no change to the core needed)."""
    app.mount_static(prefix, folder, redirect_root=redirect_root)
