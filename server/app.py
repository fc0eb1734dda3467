"""The cnnserve server process: grpc.aio with the KServe v2 and image services, health, reflection, metrics.

server = CnnServer(settings)
port = await server.start()     # binds, loads and warms every model, then reports SERVING
await server.wait()             # until stop() or termination
await server.stop(grace=10)     # NOT_SERVING, stop accepting, finish in-flight, drain, close
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc, images_pb2, images_pb2_grpc
from cnnserve._proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from cnnserve.server.explainer import ExplainerHandler
from cnnserve.server.grpc.admission import AdmissionGate, transport_options
from cnnserve.server.grpc.explainer import ExplainerServicer
from cnnserve.server.grpc.images import ImageServicer
from cnnserve.server.grpc.inference import InferenceServicer
from cnnserve.server.images import ImageHandler
from cnnserve.server.inference import InferenceHandler
from cnnserve.server.metrics import ServerMetrics
from cnnserve.server.model_manager import ModelManager
from cnnserve.server.runtime import choose_providers
from cnnserve.server.settings import ServerSettings
from cnnserve.service.access import interceptors, server_credentials
from cnnserve.service.health import HealthService

log = logging.getLogger(__name__)

# How long shutdown answers new calls UNAVAILABLE before the transport stops accepting them.
DRAIN_NOTICE_SECONDS = 0.5
# The calls that do work, and so count against the admission limit; metadata, health and statistics do not.
# The automatic admission limit never goes below this, so explanations and Classify have room beside small queues.
MIN_ADMISSION_LIMIT = 1024
ADMITTED_METHODS = frozenset(
    {"ModelInfer", "ModelStreamInfer", "Classify", "Heatmap", "Activations", "FilterPatterns", "ListLayers"}
)

SERVICE_NAMES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    images_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
)
# Forwarded to the explainer sidecar; its health is the sidecar's own (grpc.health.v1 there).
EXPLAINER_SERVICE = explainer_pb2.DESCRIPTOR.services_by_name["Explainer"].full_name


@dataclass
class ServerState:
    live: bool = False
    ready: bool = False


class CnnServer:
    """One server: bound port, models, services. Tests bind port 0 and read ``grpc_port``."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.state = ServerState()
        self.metrics = ServerMetrics()
        self.health = HealthService()
        self.models: ModelManager | None = None
        self.explainer: ExplainerHandler | None = None
        self.grpc_port = 0
        self.metrics_port = 0
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self._poller: asyncio.Task | None = None
        self._gate = AdmissionGate(
            self.metrics,
            settings.max_concurrent_calls or 0,
            ADMITTED_METHODS,
            "CNNSERVE_MAX_CONCURRENT_CALLS",
        )

    async def start(self) -> int:
        """Bind, load and warm up every model, then report SERVING. Returns the bound gRPC port."""
        s = self.settings
        providers = choose_providers(s.device, s.allow_cpu_fallback)
        log.info("onnxruntime providers: %s", providers)
        self.models = ModelManager(s, providers, on_change=self._size_admission)
        self._size_admission()
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            # 0 unless --workers: a second server must fail to bind a port in use, not share it silently.
            ("grpc.so_reuseport", 1 if s.reuse_port else 0),
            *transport_options(s.max_pending_calls),
        ]
        credentials = server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
        # Only the token check is an interceptor, and only when tokens are configured: draining and admission
        # are a gate on each servicer (see AdmissionGate), which costs a call far less than an interceptor.
        server = grpc.aio.server(options=options, interceptors=interceptors(s.auth_token_file, s.auth_tokens))
        gate = self._gate.gate
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            gate(InferenceServicer(self.models, InferenceHandler(self.models), self.metrics, self.state)), server
        )
        images_pb2_grpc.add_ImageServiceServicer_to_server(
            gate(ImageServicer(ImageHandler(self.models), self.metrics)), server
        )
        # explainer_tls_ca set: TLS to the sidecar, offering this server's own certificate for mutual TLS.
        self.explainer = ExplainerHandler(
            s.explainer_address,
            max_message_bytes=s.max_message_bytes,
            tls_ca=s.explainer_tls_ca,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
        )
        explainer_pb2_grpc.add_ExplainerServicer_to_server(
            gate(ExplainerServicer(self.explainer, self.metrics)), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                EXPLAINER_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{s.host}:{s.grpc_port}"
        if credentials is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            self.grpc_port = server.add_secure_port(address, credentials)
        if self.grpc_port == 0:
            raise OSError(f"could not bind gRPC port {s.host}:{s.grpc_port}")
        await server.start()
        self._server = server
        self.state.live = True
        if s.metrics_port >= 0:
            self.metrics.watch_models(self._served_versions)
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        await self.models.load_all()
        if s.repository_poll_seconds > 0:
            self._poller = asyncio.create_task(self.models.poll_forever(s.repository_poll_seconds))
        self.state.ready = True
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving %d model(s) on %s:%d (metrics on %d)",
            sum(1 for e in self.models.models.values() if e.versions),
            s.host,
            self.grpc_port,
            self.metrics_port,
        )
        return self.grpc_port

    def _size_admission(self) -> None:
        """The admission limit: the setting, or (0, the default) what the served models' queues can hold."""
        configured = self.settings.max_concurrent_calls
        capacity = self.models.capacity() if self.models is not None else 0
        self._gate.limit = configured or max(MIN_ADMISSION_LIMIT, capacity)

    def _served_versions(self):
        if self.models is None:
            return []
        return [v for e in list(self.models.models.values()) for v in list(e.versions.values())]

    async def wait(self) -> None:
        """Until the server stops."""
        await self._stopped.wait()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new calls, finish in-flight ones, drain batchers, close."""
        if self._stopped.is_set():
            return
        grace = self.settings.grace_seconds if grace is None else grace
        self.state.ready = False
        if self._poller is not None:
            self._poller.cancel()
        # New calls get a clear UNAVAILABLE from here on, while the transport still accepts them; a moment
        # later the gRPC server stops accepting, and only then could a late call be cancelled by the transport.
        self._gate.draining = True
        await self.health.shut_down()
        await asyncio.sleep(min(DRAIN_NOTICE_SECONDS, grace))
        if self._server is not None:
            await self._server.stop(grace)
        if self.models is not None:
            await self.models.close()
        if self.explainer is not None:
            await self.explainer.close()
        self.metrics.close()
        self.state.live = False
        self._stopped.set()
        log.info("server stopped")
