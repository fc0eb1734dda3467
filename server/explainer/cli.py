"""`cnnserve explainer` (the TensorFlow sidecar) and `cnnserve explain` (its client).

    cnnserve explainer --model-repository models --grpc-port 8011
    cnnserve explain --server 127.0.0.1:8001 --model mnist_cnn --method gradcam digit.png --output-dir out
    cnnserve explain --server ... --model mnist_cnn --what activations --layer conv1 digit.png --output-dir out
    cnnserve explain --server ... --model mnist_cnn --what filters --layer conv2 --filters 0-7 --output-dir out
    cnnserve explain --server ... --model mnist_cnn --what layers

The client talks to the main server (which forwards to the sidecar) or to the sidecar itself.
Nothing here imports TensorFlow at import time: only the sidecar's command does, inside its function.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("cnnserve.explainer")

METHODS = ("gradcam", "grad_x_activation", "gradcam_plus_plus", "score_cam")


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

    e = sub.add_parser(
        "explain",
        help="ask the explainer for heatmaps, activations, filter patterns or layers",
        description="--what heatmap (default): DIR/<image>/overlay.png and heatmap.npy per image; "
        "--what activations: DIR/<image>/grid.png and activations.npy; --what filters: DIR/filter_<i>.png; "
        "--what layers: print the layers. Images are PNG/JPEG files, or .npy uint8 arrays sent as raw pixels.",
    )
    e.add_argument("images", nargs="*", type=Path, help="image files (PNG, JPEG, or .npy uint8 [H, W(, C)])")
    e.add_argument("--server", default="127.0.0.1:8001", help="HOST:PORT of cnnserve or of the explainer")
    e.add_argument("--model", required=True, help="model name in the repository")
    e.add_argument("--version", default="", help="model version (default: the newest)")
    e.add_argument("--what", choices=["heatmap", "activations", "filters", "layers"], default="heatmap")
    e.add_argument("--method", choices=METHODS, default="gradcam", help="heatmap method (default gradcam)")
    e.add_argument("--layer", default="", help="layer name (heatmap default: the model's Grad-CAM layer)")
    e.add_argument("--target-class", type=int, help="class to explain (default: the predicted class)")
    e.add_argument("--alpha", type=float, help="overlay opacity in [0, 1] (default 0.4)")
    e.add_argument("--channels", default="", help="activations: channels, e.g. 0-15 or 1,5,9 (default all)")
    e.add_argument("--filters", default="0-7", help="filters: indices, e.g. 0-7 or 1,5,9 (default 0-7)")
    e.add_argument("--steps", type=int, default=0, help="filters: gradient-ascent steps (default 50)")
    e.add_argument("--step-size", type=float, default=0.0, help="filters: step size (default 0.9)")
    e.add_argument("--size", type=int, default=0, help="filters: pattern side in pixels (default: input size)")
    e.add_argument("--regularized", action="store_true", help="filters: jitter, scale and rotate every step")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--output-dir", type=Path, default=Path("explanations"))
    e.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds")
    e.add_argument("--tls-ca", type=Path, help="PEM CA that signed the server's certificate (enables TLS)")
    e.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    e.add_argument("--tls-key", type=Path, help="client key for mutual TLS")
    e.add_argument("--token-file", type=Path, help="file holding a bearer token (or set CNNSERVE_TOKEN)")
    e.set_defaults(func=_explain)


def _run_explainer(args) -> int:
    import asyncio
    import signal

    from cnnserve.server.explainer.app import ExplainerServer  # imports TensorFlow
    from cnnserve.server.explainer.settings import ExplainerSettings

    fields = ExplainerSettings.model_fields
    settings = ExplainerSettings(**{k: v for k, v in vars(args).items() if k in fields and v is not None})

    async def run() -> None:
        server = ExplainerServer(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        print(json.dumps({"event": "ready", "grpc_port": server.grpc_port}), flush=True)
        await stop.wait()
        log.info("signal received: shutting down (grace %.1fs)", settings.grace_seconds)
        await server.stop()

    asyncio.run(run())
    return 0


def parse_indices(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part[1:]:
            low, high = part.split("-", 1) if not part.startswith("-") else (part, part)
            out.extend(range(int(low), int(high) + 1))
        else:
            out.append(int(part))
    return out


def _image(path: Path):
    import numpy as np

    from cnnserve.server.explainer.convert import image_message

    if path.suffix == ".npy":
        return image_message(np.load(path), path.stem)
    return image_message(path.read_bytes(), path.stem)


def _explain(args) -> int:
    import grpc

    from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
    from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc

    if args.what in ("heatmap", "activations") and not args.images:
        print(f"error: --what {args.what} needs at least one image", file=sys.stderr)
        return 2
    from cnnserve.server.security import channel_credentials, env_token

    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    if args.tls_ca or args.tls_cert:
        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        channel = grpc.secure_channel(args.server, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.server, options=options)
    token = args.token_file.read_text().strip() if args.token_file else env_token()
    if token:
        channel = grpc.intercept_channel(channel, _bearer_token(token))
    with channel:
        stub = pb_grpc.ExplainerStub(channel)
        try:
            if args.what == "heatmap":
                return _heatmaps(stub, pb, args)
            if args.what == "activations":
                return _activations(stub, pb, args)
            if args.what == "filters":
                return _filters(stub, pb, args)
            return _layers(stub, pb, args)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1


def _bearer_token(token: str):
    """A channel interceptor that sends ``authorization: Bearer <token>`` with every call."""
    from cnnserve.client import _Metadata

    return _Metadata((("authorization", f"Bearer {token}"),))


def _heatmaps(stub, pb, args) -> int:
    import numpy as np

    from cnnserve.server.explainer.convert import METHOD_ENUMS, from_tensor

    request = pb.HeatmapRequest(
        model_name=args.model,
        model_version=args.version,
        images=[_image(p) for p in args.images],
        method=METHOD_ENUMS[args.method],
        layer=args.layer,
    )
    if args.target_class is not None:
        request.target_class = args.target_class
    if args.alpha is not None:
        request.overlay_alpha = args.alpha
    response = stub.Heatmap(request, timeout=args.timeout)
    for path, result in zip(args.images, response.results, strict=True):
        folder = args.output_dir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "overlay.png").write_bytes(result.overlay_png)
        np.save(folder / "heatmap.npy", from_tensor(result.heatmap))
        print(
            json.dumps(
                {
                    "image": str(path),
                    "method": args.method,
                    "layer": response.layer,
                    "predicted": {
                        "class": result.predicted_class,
                        "label": result.predicted_label,
                        "score": round(result.predicted_score, 6),
                    },
                    "target": {"class": result.target_class, "score": round(result.target_score, 6)},
                    "overlay": str(folder / "overlay.png"),
                    "heatmap": str(folder / "heatmap.npy"),
                }
            )
        )
    return 0


def _activations(stub, pb, args) -> int:
    import numpy as np

    from cnnserve.server.explainer.convert import from_tensor

    request = pb.ActivationsRequest(
        model_name=args.model,
        model_version=args.version,
        images=[_image(p) for p in args.images],
        layer=args.layer,
        channels=parse_indices(args.channels),
    )
    response = stub.Activations(request, timeout=args.timeout)
    for path, result in zip(args.images, response.results, strict=True):
        folder = args.output_dir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "grid.png").write_bytes(result.grid_png)
        np.save(folder / "activations.npy", from_tensor(result.activations))
        print(
            json.dumps(
                {
                    "image": str(path),
                    "layer": response.layer,
                    "grid": str(folder / "grid.png"),
                    "channels": len(response.channels),
                    "dead_channels": list(result.dead_channels),
                }
            )
        )
    return 0


def _filters(stub, pb, args) -> int:
    request = pb.FilterPatternsRequest(
        model_name=args.model,
        model_version=args.version,
        layer=args.layer,
        filters=parse_indices(args.filters),
        steps=args.steps,
        step_size=args.step_size,
        size=args.size,
        regularized=args.regularized,
        seed=args.seed,
    )
    response = stub.FilterPatterns(request, timeout=args.timeout)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for pattern in response.patterns:
        path = args.output_dir / f"{response.layer}_filter_{pattern.filter}.png"
        path.write_bytes(pattern.png)
        print(
            json.dumps(
                {"filter": pattern.filter, "activation": pattern.activation, "cached": pattern.cached, "png": str(path)}
            )
        )
    return 0


def _layers(stub, pb, args) -> int:
    response = stub.ListLayers(
        pb.ListLayersRequest(model_name=args.model, model_version=args.version), timeout=args.timeout
    )
    print(
        f"{response.model_name} version {response.model_version}: input {list(response.input_shape)}, "
        f"default heatmap layer {response.default_heatmap_layer}"
    )
    for layer in response.layers:
        mark = "*" if layer.spatial else " "
        print(f" {mark} {layer.name:<24} {layer.class_name:<20} {list(layer.output_shape)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="cnnserve")
    add_explainer_parsers(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
