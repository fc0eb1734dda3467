"""The explainer sidecar process: grpc.aio with cnnserve.v1.Explainer, health and reflection.

server = ExplainerServer(settings)
port = await server.start()     # binds, loads every model.keras, then reports SERVING
await server.wait()             # until stop()
await server.stop(grace=5)      # NOT_SERVING, finish in-flight calls, stop the worker
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc
from cnnserve.server.explainer.handler import ExplainerHandler
from cnnserve.server.explainer.servicer import ExplainerServicer
from cnnserve.server.explainer.settings import ExplainerSettings
from cnnserve.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = explainer_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name


class ExplainerServer:
    """The sidecar. Tests bind port 0 and read ``grpc_port``."""

    def __init__(self, settings: ExplainerSettings) -> None:
        self.settings = settings
        self.health = HealthServicer()
        self.metrics = ServerMetrics()  # request counts; the sidecar exports no metrics port
        self.handler = ExplainerHandler(settings)
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        s = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        explainer_pb2_grpc.add_ExplainerServicer_to_server(ExplainerServicer(self.handler, self.metrics), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.grpc_port = server.add_insecure_port(f"{s.host}:{s.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"could not bind gRPC port {s.host}:{s.grpc_port}")
        await server.start()
        self._server = server
        await self.handler.load()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("explainer serving %d model(s) on %s:%d", len(self.handler.table.models), s.host, self.grpc_port)
        return self.grpc_port

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        grace = self.settings.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        await asyncio.to_thread(self.handler.close)
        self._stopped.set()
        log.info("explainer stopped")
