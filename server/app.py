"""The cnnserve server process: grpc.aio with the KServe v2 and image services, health, reflection, metrics,
and the HTTP front door (``server/http/``) on the same loop over the same handlers.

server = CnnServer(settings)
port = await server.start()     # binds gRPC and HTTP, loads and warms every model, then reports SERVING
await server.wait()             # until stop() or termination
await server.stop(grace=10)     # NOT_SERVING, stop accepting, finish in-flight, drain, close
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc, images_pb2, images_pb2_grpc
from cnnserve._proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from cnnserve.server.explainer import ExplainerHandler
from cnnserve.server.grpc.admission import AdmissionGate, transport_options
from cnnserve.server.grpc.explainer import ExplainerServicer
from cnnserve.server.grpc.images import ImageServicer
from cnnserve.server.grpc.inference import InferenceServicer
from cnnserve.server.http import FrontDoor, mount_static
from cnnserve.server.http.server import HttpListener
from cnnserve.server.images import ImageHandler
from cnnserve.server.inference import InferenceHandler
from cnnserve.server.metrics import ServerMetrics
from cnnserve.server.model_manager import ModelManager
from cnnserve.server.providers import plan_providers
from cnnserve.server.settings import ServerSettings
from cnnserve.service.access import load_tokens
from cnnserve.service.bootstrap import SERVING, GrpcProcess, access_summary, build_server, report, start_server

log = logging.getLogger(__name__)

# How long shutdown answers new calls UNAVAILABLE before the transport stops accepting them.
DRAIN_NOTICE_SECONDS = 0.5
# The calls that do work, and so count against the admission limit; metadata, health and statistics do not.
# The automatic admission limit never goes below this, so explanations and Classify have room beside small queues.
MIN_ADMISSION_LIMIT = 1024
ADMITTED_METHODS = frozenset(
    {
        "ModelInfer",
        "ModelStreamInfer",
        "Classify",
        "Heatmap",
        "Activations",
        "FilterPatterns",
        "ListLayers",
        "Faithfulness",
    }
)

SERVICE_NAMES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    images_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
)
# Forwarded to the explainer sidecar; its health is the sidecar's own (grpc.health.v1 there).
EXPLAINER_SERVICE = explainer_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name
# The console's static files (package data of its own; served at /console when present).
CONSOLE_FOLDER = Path(__file__).resolve().parent / "http" / "console"


@dataclass
class ServerState:
    live: bool = False
    ready: bool = False


class CnnServer(GrpcProcess):
    """One server: bound ports, models, services. Tests bind port 0 and read ``grpc_port`` and ``http_port``."""

    name = "server"

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self.state = ServerState()
        self.metrics = ServerMetrics()
        self.models: ModelManager | None = None
        self.inference: InferenceHandler | None = None
        self.images: ImageHandler | None = None
        self.explainer: ExplainerHandler | None = None
        self.front_door: FrontDoor | None = None
        self.http: HttpListener | None = None
        self.metrics_port = 0
        self.http_port = -1
        self._poller: asyncio.Task | None = None
        self.gate = AdmissionGate(
            settings.max_concurrent_calls or 0,
            ADMITTED_METHODS,
            "CNNSERVE_MAX_CONCURRENT_CALLS",
        )

    async def start(self) -> int:
        """Bind, load and warm up every model, then report SERVING. Returns the bound gRPC port."""
        s = self.settings
        plan = plan_providers(s)
        log.info("onnxruntime providers: %s", plan.providers())
        self.models = ModelManager(s, plan, on_change=self._size_admission)
        self._size_admission()
        self._make_handlers()
        server = build_server(s, self._transport_options())
        self._add_servicers(server)
        self.grpc_port = await start_server(server, s, self.health, SERVICE_NAMES, also_reflected=(EXPLAINER_SERVICE,))
        self._server = server
        if s.http_port >= 0:
            await self._start_http()
        self.state.live = True
        if s.metrics_port >= 0:
            self.metrics.watch_models(self._served_versions)
            self.metrics_port = self.metrics.serve(s.metrics_host or s.host, s.metrics_port)
        await self.models.load_all()
        if s.repository_poll_seconds > 0:
            self._poller = asyncio.create_task(self.models.poll_forever(s.repository_poll_seconds))
        self.state.ready = True
        await report(self.health, SERVICE_NAMES, SERVING)
        log.info(
            "serving %d model(s) on %s: gRPC %d, HTTP %s, metrics %d (%s)",
            sum(1 for e in self.models.models.values() if e.versions),
            s.host,
            self.grpc_port,
            self.http_port if self.http_port >= 0 else "off",
            self.metrics_port,
            access_summary(s),
        )
        return self.grpc_port

    def _transport_options(self) -> list[tuple[str, int]]:
        return [
            # 0 unless --workers: a second server must fail to bind a port in use, not share it silently.
            ("grpc.so_reuseport", 1 if self.settings.reuse_port else 0),
            *transport_options(self.settings.max_pending_calls),
        ]

    def _make_handlers(self) -> None:
        """The transport-free handlers both transports call: one of each, over the same batchers."""
        s = self.settings
        self.inference = InferenceHandler(self.models)
        self.images = ImageHandler(self.models)
        # explainer_tls_ca set: TLS to the sidecar, offering this server's own certificate for mutual TLS.
        self.explainer = ExplainerHandler(
            s.explainer_address,
            max_message_bytes=s.max_message_bytes,
            tls_ca=s.explainer_tls_ca,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
        )

    def _add_servicers(self, server: grpc.aio.Server) -> None:
        """Each service's servicer over its handler, behind the drain gate and the admission limit."""
        gate = self.gate
        inference = InferenceServicer(self.models, self.inference, self.metrics, self.state, gate)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
        images_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(self.images, self.metrics, gate), server)
        explainer_pb2_grpc.add_ExplainerServicer_to_server(
            ExplainerServicer(self.explainer, self.metrics, gate), server
        )

    async def _start_http(self) -> None:
        """The HTTP front door on the same loop: same handlers, gate, tokens, certificate and metrics."""
        s = self.settings
        self.front_door = FrontDoor(self, load_tokens(s.auth_token_file, s.auth_tokens))
        if (CONSOLE_FOLDER / "index.html").is_file():
            mount_static(self.front_door, "/console", CONSOLE_FOLDER, redirect_root=True)
        self.http = HttpListener(
            self.front_door, s, on_parse_error=lambda: self.metrics.http_request("malformed", "400")
        )
        self.http_port = await self.http.start()

    def _size_admission(self) -> None:
        """The admission limit: the setting, or (0, the default) what the served models' queues can hold."""
        configured = self.settings.max_concurrent_calls
        capacity = self.models.capacity() if self.models is not None else 0
        self.gate.limit = configured or max(MIN_ADMISSION_LIMIT, capacity)

    def _served_versions(self):
        return self.models.served_versions() if self.models is not None else []

    async def stop_accepting(self, grace: float) -> None:
        """NOT_SERVING and refusing new calls with UNAVAILABLE, while the transport still accepts them: only
        after a moment does the gRPC server stop accepting, when a late call would be cancelled instead."""
        self.state.ready = False
        if self._poller is not None:
            self._poller.cancel()
        self.gate.draining = True
        await self.health.shut_down()
        await asyncio.sleep(min(DRAIN_NOTICE_SECONDS, grace))

    async def stop_other_transports(self, grace: float) -> None:
        if self.http is not None:
            await self.http.stop(grace)

    async def close(self) -> None:
        """Drain the batchers (queued requests finish), close the sidecar channel and the metrics endpoint."""
        if self.models is not None:
            await self.models.close()
        if self.explainer is not None:
            await self.explainer.close()
        self.metrics.close()
        self.state.live = False
