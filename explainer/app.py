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

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc
from cnnserve.explainer.handler import ExplainerHandler
from cnnserve.explainer.servicer import ExplainerServicer
from cnnserve.explainer.settings import ExplainerSettings
from cnnserve.service.bootstrap import SERVING, GrpcProcess, access_summary, build_server, report, start_server
from cnnserve.service.metrics import RequestMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = explainer_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name


class ExplainerServer(GrpcProcess):
    """The sidecar. Tests bind port 0 and read ``grpc_port``."""

    name = "explainer"

    def __init__(self, settings: ExplainerSettings) -> None:
        super().__init__(settings)
        self.metrics = RequestMetrics()  # request counts, and the work queue's figures, on the metrics port
        self.handler = ExplainerHandler(settings)
        self.metrics.registry.register(self.handler.queue)
        self.metrics_port = -1

    async def start(self) -> int:
        s = self.settings
        server = build_server(s, [("grpc.so_reuseport", 0)])
        explainer_pb2_grpc.add_ExplainerServicer_to_server(ExplainerServicer(self.handler, self.metrics), server)
        self.grpc_port = await start_server(server, s, self.health, (SERVICE_NAME,))
        self._server = server
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        await self.handler.load()
        await report(self.health, (SERVICE_NAME,), SERVING)
        log.info(
            "explainer serving %d model(s) on %s:%d (metrics on %d; %s)",
            len(self.handler.table.models),
            s.host,
            self.grpc_port,
            self.metrics_port,
            access_summary(s),
        )
        return self.grpc_port

    async def close(self) -> None:
        await asyncio.to_thread(self.handler.close)
        self.metrics.close()
