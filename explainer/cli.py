"""`cnnserve explainer`: the TensorFlow sidecar's command (its client, `cnnserve explain`, is in client/).

    cnnserve explainer --model-repository models --grpc-port 8011

Nothing here imports TensorFlow at import time: only the command does, inside its function.
"""

from __future__ import annotations

from pathlib import Path

from cnnserve.service.bootstrap import print_ready, run_loop, serve_until_signal


def add_explainer_parsers(sub) -> None:
    p = sub.add_parser("explainer", help="serve heatmaps, activation maps and filter patterns (TensorFlow sidecar)")
    p.add_argument("--model-repository", type=Path, help="Triton-layout model repository (default: models)")
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8011; 0 picks a free port)")
    p.add_argument("--max-message-bytes", type=int, help="largest gRPC message (default 64 MiB)")
    p.add_argument("--max-images", type=int, help="most images per request (default 64)")
    p.add_argument("--max-filters", type=int, help="most filters per FilterPatterns request (default 64)")
    p.add_argument("--max-steps", type=int, help="most gradient-ascent steps (default 500)")
    p.add_argument("--grace-seconds", type=float, help="SIGTERM grace period (default 5)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument(
        "--auth-token-file",
        type=Path,
        help="accepted bearer tokens, one per line (CNNSERVE_EXPLAINER_AUTH_TOKENS also)",
    )
    p.set_defaults(func=_run_explainer)


def _run_explainer(args) -> int:
    from cnnserve.explainer.app import ExplainerServer  # imports TensorFlow
    from cnnserve.explainer.settings import ExplainerSettings

    server = ExplainerServer(ExplainerSettings.from_args(args))
    run_loop(serve_until_signal(server, lambda: print_ready(grpc_port=server.grpc_port)))
    return 0
