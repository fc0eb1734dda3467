"""The explainer sidecar process: grpc.aio with cnnserve.v1.Explainer, health and reflection.

server = ExplainerServer(settings)
port = await server.start()     # binds, loads every model.keras, then reports SERVING
await server.wait()             # until stop()
await server.stop(grace=5)      # NOT_SERVING, end health watches, finish in-flight calls, stop the worker

Access is the main server's (cnnserve/service/access.py): TLS with ``tls_cert``/``tls_key``, mutual TLS with
``tls_client_ca``, bearer tokens with ``auth_token_file``/``auth_tokens``; health and reflection stay open.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc
from cnnserve.explainer.handler import ExplainerHandler
from cnnserve.explainer.servicer import ExplainerServicer
from cnnserve.explainer.settings import ExplainerSettings
from cnnserve.service.bootstrap import SERVING, access_summary, build_server, report, start_server
from cnnserve.service.health import HealthService
from cnnserve.service.metrics import RequestMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = explainer_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name


class ExplainerServer:
    """The sidecar. Tests bind port 0 and read ``grpc_port``."""

    def __init__(self, settings: ExplainerSettings) -> None:
        self.settings = settings
        self.health = HealthService()
        self.metrics = RequestMetrics()  # request counts; the sidecar exports no metrics port
        self.handler = ExplainerHandler(settings)
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        s = self.settings
        server = build_server(s, [("grpc.so_reuseport", 0)])
        explainer_pb2_grpc.add_ExplainerServicer_to_server(ExplainerServicer(self.handler, self.metrics), server)
        self.grpc_port = await start_server(server, s, self.health, (SERVICE_NAME,))
        self._server = server
        await self.handler.load()
        await report(self.health, (SERVICE_NAME,), SERVING)
        log.info(
            "explainer serving %d model(s) on %s:%d (%s)",
            len(self.handler.table.models),
            s.host,
            self.grpc_port,
            access_summary(s),
        )
        return self.grpc_port

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        grace = self.settings.grace_seconds if grace is None else grace
        await self.health.shut_down()  # NOT_SERVING, then Watch streams end: grace is for real calls
        if self._server is not None:
            await self._server.stop(grace)
        await asyncio.to_thread(self.handler.close)
        self._stopped.set()
        log.info("explainer stopped")
