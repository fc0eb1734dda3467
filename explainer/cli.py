"""`cnnserve explainer`: the TensorFlow sidecar's command (its client, `cnnserve explain`, is in client/).

    cnnserve explainer --model-repository models --grpc-port 8011

Nothing here imports TensorFlow at import time: only the command does, inside its function.
"""

from __future__ import annotations

from cnnserve.service.bootstrap import print_ready, run_loop, serve_until_signal


def add_explainer_parsers(sub) -> None:
    from cnnserve.explainer.settings import ExplainerSettings

    p = sub.add_parser("explainer", help="serve heatmaps, activation maps and filter patterns (TensorFlow sidecar)")
    ExplainerSettings.add_arguments(p)
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 8012; 0 picks one; -1 disables)")
    p.add_argument(
        "--max-queued-images",
        type=int,
        help="images (filters for FilterPatterns) admitted at once; more are refused RESOURCE_EXHAUSTED (512)",
    )
    p.add_argument("--max-images", type=int, help="most images per request (default 64)")
    p.add_argument("--max-filters", type=int, help="most filters per FilterPatterns request (default 64)")
    p.add_argument("--max-steps", type=int, help="most gradient-ascent steps (default 500)")
    p.set_defaults(func=_run_explainer)


def _run_explainer(args) -> int:
    from cnnserve.explainer.app import ExplainerServer  # imports TensorFlow
    from cnnserve.explainer.settings import ExplainerSettings

    server = ExplainerServer(ExplainerSettings.from_args(args))

    def ready() -> None:
        print_ready(grpc_port=server.grpc_port, metrics_port=server.metrics_port)

    run_loop(serve_until_signal(server, ready))
    return 0
