"""`cnnserve serve`: the server's command (settings from arguments over CNNSERVE_* variables)."""

from __future__ import annotations

import logging
from pathlib import Path

from cnnserve.service.bootstrap import print_ready, run_loop, serve_until_signal

log = logging.getLogger(__name__)


def add_serve_parser(sub) -> None:
    from cnnserve.server.settings import ServerSettings

    p = sub.add_parser("serve", help="serve a model repository over gRPC and HTTP (KServe v2 / Triton protocol)")
    ServerSettings.add_arguments(p)
    p.add_argument("--http-port", type=int, help="HTTP port, KServe v2 REST (default 8000; 0 picks one; -1 disables)")
    p.add_argument("--http-request-timeout", type=float, help="seconds a request may take to arrive (default 30)")
    p.add_argument("--http-keepalive-timeout", type=float, help="seconds an idle HTTP connection stays open (60)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 8002; -1 disables)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="onnxruntime execution provider (default cpu)")
    p.add_argument("--allow-cpu-fallback", action="store_true", default=None, help="with --device cuda")
    p.add_argument("--cuda-device-id", type=int, help="CUDA device (default 0; a model's instance_group gpus wins)")
    p.add_argument("--cuda-mem-limit", type=int, help="CUDA arena cap per session in bytes (default 0: none)")
    p.add_argument(
        "--cuda-arena-extend-strategy", choices=["kNextPowerOfTwo", "kSameAsRequested"], help="default kNextPowerOfTwo"
    )
    p.add_argument(
        "--cudnn-conv-algo-search", choices=["EXHAUSTIVE", "HEURISTIC", "DEFAULT"], help="default EXHAUSTIVE"
    )
    p.add_argument("--cuda-graphs", action="store_true", default=None, help="a CUDA graph per batch size")
    p.add_argument("--tensorrt", action="store_true", default=None, help="TensorRT provider before CUDA (off)")
    p.add_argument(
        "--gpu-memory-bytes", type=int, help="refuse to start when the models need more GPU memory (0: unchecked)"
    )
    p.add_argument("--io-binding", choices=["auto", "on", "off"], help="device buffers per batch size (auto: CUDA)")
    p.add_argument("--max-queue-size", type=int, help="per-model queue bound in samples (default 1024)")
    p.add_argument("--no-batching", dest="batching", action="store_false", default=None, help="run requests alone")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", default=None)
    p.add_argument(
        "--auto-complete-max-batch-size",
        type=int,
        help="max_batch_size of a bare VERSION/model.onnx folder with a dynamic first dimension (default 4)",
    )
    p.add_argument("--intra-op-threads", type=int, help="onnxruntime threads per session (0: its default)")
    p.add_argument(
        "--max-concurrent-calls",
        type=int,
        help="admission limit: work calls at once, more are refused RESOURCE_EXHAUSTED (0: what the queues hold)",
    )
    p.add_argument(
        "--max-pending-calls", type=int, help="calls gRPC core may hold before the server picks them up (65536)"
    )
    p.add_argument("--repository-poll-seconds", type=float, help="reload new/changed models every N s (0: off)")
    p.add_argument("--explainer-address", help="explainer sidecar HOST:PORT (default 127.0.0.1:8011)")
    p.add_argument(
        "--explainer-tls-ca",
        type=Path,
        help="CA of the explainer's certificate: TLS to the sidecar (default plaintext)",
    )
    p.add_argument("--workers", type=int, help="server processes sharing the ports via SO_REUSEPORT (default 1)")
    p.add_argument(
        "--worker-restarts-per-minute",
        type=int,
        help="with --workers: exits within a minute after which the server stops non-zero (default 5)",
    )
    p.add_argument("--uvloop", action="store_true", default=None, help="run the event loop on uvloop")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from cnnserve.server.app import CnnServer
    from cnnserve.server.settings import ServerSettings

    settings = ServerSettings.from_args(args)
    if settings.workers > 1:
        from cnnserve.server.workers import WorkersFailed, serve_workers

        try:
            run_loop(serve_workers(settings, settings.workers, ready), settings.uvloop)
        except WorkersFailed as exc:
            log.error("%s", exc)
            return 1
        return 0
    server = CnnServer(settings)
    on_ready = lambda: ready(server.grpc_port, server.metrics_port, server.http_port)  # noqa: E731
    run_loop(serve_until_signal(server, on_ready), settings.uvloop)
    return 0


def ready(grpc_port: int, metrics_port: int, http_port: int = -1) -> None:
    """The ready line: the bound ports (``http_port`` -1: HTTP disabled)."""
    print_ready(grpc_port=grpc_port, metrics_port=metrics_port, http_port=http_port)
