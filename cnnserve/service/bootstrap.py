"""How a gRPC process of cnnserve starts and stops: the one bootstrap of the server and the sidecar.

server = build_server(settings, options)                  # limits, TLS, tokens
register servicers ...
port = await start_server(server, settings, health, services)   # health NOT_SERVING, reflection, bind, start
... load models ...; await report(health, services, SERVING)
await serve_until_signal(process, on_ready)               # SIGTERM/SIGINT -> process.stop()
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cnnserve.protocol import channel_options
from cnnserve.service.access import interceptors, server_credentials
from cnnserve.service.health import HealthService
from cnnserve.service.settings import ServiceSettings

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcProcess:
    """A gRPC process's life: ``start()`` (subclasses), ``wait()`` until stopped, ``stop(grace)``.

    ``stop`` stops accepting (``stop_accepting``: health NOT_SERVING and its Watch streams ended, so the grace
    period is spent on real calls), lets in-flight calls finish within ``grace``, then ``close``s.
    """

    name = "process"

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.health = HealthService()
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()

    async def wait(self) -> None:
        """Until the process stops."""
        await self._stopped.wait()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        grace = self.settings.grace_seconds if grace is None else grace
        await self.stop_accepting(grace)
        stopping = [self.stop_other_transports(grace)]
        if self._server is not None:
            stopping.append(self._server.stop(grace))
        await asyncio.gather(*stopping)  # in-flight calls of every transport finish within the same grace
        await self.close()
        self._stopped.set()
        log.info("%s stopped", self.name)

    async def stop_accepting(self, grace: float) -> None:
        await self.health.shut_down()

    async def stop_other_transports(self, grace: float) -> None:
        """Stop a transport beside gRPC (the server's HTTP port): stop accepting, finish in-flight calls."""

    async def close(self) -> None:
        """Release what the process holds, once no call runs any more."""


def build_server(settings: ServiceSettings, options: Sequence[tuple[str, int]] = ()) -> grpc.aio.Server:
    """A grpc.aio server with the message limits, ``options``, and the token check when tokens are configured
    (the only interceptor: anything else on the request path belongs on the servicers)."""
    return grpc.aio.server(
        options=[*channel_options(settings.max_message_bytes), *options],
        interceptors=interceptors(settings.auth_token_file, settings.auth_tokens),
    )


async def start_server(
    server: grpc.aio.Server,
    settings: ServiceSettings,
    health: HealthService,
    services: Sequence[str],
    *,
    also_reflected: Sequence[str] = (),
) -> int:
    """Add health (NOT_SERVING for ``services`` and the overall status) and reflection (of ``services`` and
    ``also_reflected``), bind (TLS when a certificate is configured), start; returns the bound port.
    ``report`` says SERVING once the process is ready."""
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (*services, *also_reflected, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    await report(health, services, NOT_SERVING)
    credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    address = f"{settings.host}:{settings.grpc_port}"
    port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind gRPC port {address}")
    await server.start()
    return port


async def report(health: HealthService, services: Sequence[str], status) -> None:
    """The same health status for the overall service ("") and each of ``services``."""
    for name in ("", *services):
        await health.set(name, status)


def access_summary(settings: ServiceSettings) -> str:
    """For the start-up log line: plaintext, TLS or mutual TLS, and whether tokens are checked."""
    transport = "plaintext" if settings.tls_cert is None else "TLS" if settings.tls_client_ca is None else "mutual TLS"
    return transport + (", bearer tokens" if settings.auth_token_file or settings.auth_tokens else "")


def print_ready(**ports: int) -> None:
    """The one machine-readable line a command prints once it serves, so callers that bind port 0 learn it."""
    print(json.dumps({"event": "ready", **ports}), flush=True)


async def serve_until_signal(process, on_ready: Callable[[], None], *, ignore: Sequence[int] = ()) -> None:
    """Start ``process`` (``start()``/``stop()``), call ``on_ready``, and stop it at SIGTERM or SIGINT.

    Signals in ``ignore`` are swallowed (a worker whose parent decides when to stop).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if sig in ignore:
            loop.add_signal_handler(sig, lambda: None)
        else:
            loop.add_signal_handler(sig, stop.set)
    await process.start()
    on_ready()
    await stop.wait()
    log.info("signal received: shutting down (grace %.1fs)", process.settings.grace_seconds)
    await process.stop()


def run_loop(coro, use_uvloop: bool = False):
    """asyncio.run, on uvloop when asked for."""
    factory = None
    if use_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
