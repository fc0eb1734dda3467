"""The client commands: `cnnserve classify` (the image API) and `cnnserve explain` (the explanation calls).

    cnnserve classify --server 127.0.0.1:8001 --model mnist_cnn digit.png
    cnnserve classify --server http://127.0.0.1:8000 --model mnist_cnn digit.png      # the same over HTTP
    cnnserve explain --server 127.0.0.1:8001 --model mnist_cnn --method gradcam digit.png --output-dir out
    cnnserve explain --server ... --model mnist_cnn --what activations --layer conv1 digit.png --output-dir out
    cnnserve explain --server ... --model mnist_cnn --what filters --layer conv2 --filters 0-7 --output-dir out
    cnnserve explain --server ... --model mnist_cnn --what layers
    cnnserve explain --server ... --model mnist_cnn --what faithfulness --samples DIR --mask-threshold 127

`explain` talks to the main server (which forwards to the sidecar) or to the sidecar itself.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import grpc
import numpy as np

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc
from cnnserve.client import CnnserveClient
from cnnserve.client.http import HttpCallError, HttpClient, is_http
from cnnserve.protocol import HEATMAP_METHOD_ENUMS, HEATMAP_METHODS, fields_of, from_float_tensor, open_channel

# Explanations of a batch of large images come back as float maps: allow more than the server's limit.
EXPLAIN_MESSAGE_BYTES = 256 * 1024 * 1024


def add_classify_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify PNG/JPEG images with a served model")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument(
        "--server",
        default="127.0.0.1:8001",
        help="HOST:PORT of cnnserve's gRPC port, or http(s)://HOST:PORT of its HTTP port (default 127.0.0.1:8001)",
    )
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--version", default="", help="model version (default: the served one)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0, help="deadline per call in seconds")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--tls-ca", help="PEM CA that signed the server's certificate (enables TLS)")
    p.add_argument("--tls-cert", help="client certificate for mutual TLS")
    p.add_argument("--tls-key", help="client key for mutual TLS")
    p.add_argument("--token-file", type=Path, help="file holding a bearer token (or set CNNSERVE_TOKEN)")
    p.set_defaults(func=_classify)


def _classify(args) -> int:
    token = args.token_file.read_text().strip() if args.token_file else None
    if is_http(args.server):
        return _classify_http(args, token)
    with CnnserveClient(
        args.server, timeout=args.timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key, token=token
    ) as client:
        try:
            response = client.classify(
                args.model, [p.read_bytes() for p in args.images], top_k=args.top_k, version=args.version
            )
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    for path, result in zip(args.images, response.results, strict=True):
        preds = [{"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in result.predictions]
        if args.json:
            print(json.dumps({"image": str(path), "predictions": preds}))
        else:
            print(f"{path}: " + ", ".join(f"{p['label']} ({p['score']:.4f})" for p in preds))
    return 0


def _classify_http(args, token: str | None) -> int:
    """The same lines over the HTTP front door: one POST /v1/models/{name}/classify per image."""
    tls = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    with HttpClient(args.server, timeout=args.timeout, token=token, **tls) as client:
        for path in args.images:
            try:
                answer = client.classify(args.model, path.read_bytes(), top_k=args.top_k, version=args.version)
            except HttpCallError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            preds = [{**p, "score": round(p["score"], 6)} for p in answer["predictions"]]
            if args.json:
                print(json.dumps({"image": str(path), "predictions": preds}))
            else:
                print(f"{path}: " + ", ".join(f"{p['label']} ({p['score']:.4f})" for p in preds))
    return 0


def add_explain_parser(sub) -> None:
    e = sub.add_parser(
        "explain",
        help="ask the explainer for heatmaps, activations, filter patterns or layers",
        description="--what heatmap (default): DIR/<image>/overlay.png and heatmap.npy per image; "
        "--what activations: DIR/<image>/grid.png and activations.npy; --what filters: DIR/filter_<i>.png; "
        "--what layers: print the layers and the faithfulness scores; --what faithfulness: score the heatmaps "
        "again on the images in --samples DIR. Images are PNG/JPEG files, or .npy uint8 arrays sent as raw pixels.",
    )
    e.add_argument("images", nargs="*", type=Path, help="image files (PNG, JPEG, or .npy uint8 [H, W(, C)])")
    e.add_argument(
        "--server",
        default="127.0.0.1:8001",
        help="HOST:PORT of cnnserve or of the explainer (gRPC), or http(s)://HOST:PORT of cnnserve",
    )
    e.add_argument("--model", required=True, help="model name in the repository")
    e.add_argument("--version", default="", help="model version (default: the newest)")
    e.add_argument("--what", choices=["heatmap", "activations", "filters", "layers", "faithfulness"], default="heatmap")
    e.add_argument(
        "--method",
        choices=list(HEATMAP_METHOD_ENUMS),
        default="",
        help="heatmap method (default: the model's, chosen by its faithfulness scores; see --what layers)",
    )
    e.add_argument("--layer", default="", help="layer name (heatmap default: the model's default heatmap layer)")
    e.add_argument("--target-class", type=int, help="class to explain (default: the predicted class)")
    e.add_argument("--alpha", type=float, help="overlay opacity in [0, 1] (default 0.4)")
    e.add_argument("--channels", default="", help="activations: channels, e.g. 0-15 or 1,5,9 (default all)")
    e.add_argument("--filters", default="0-7", help="filters: indices, e.g. 0-7 or 1,5,9 (default 0-7)")
    e.add_argument("--steps", type=int, default=0, help="filters: gradient-ascent steps (default 50)")
    e.add_argument("--step-size", type=float, default=0.0, help="filters: step size (default 0.9)")
    e.add_argument("--size", type=int, default=0, help="filters: pattern side in pixels (default: input size)")
    e.add_argument("--regularized", action="store_true", help="filters: jitter, scale and rotate every step")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--samples", type=Path, help="faithfulness: a folder of images (PNG, JPEG, .npy) to score on, up to 64"
    )
    e.add_argument(
        "--mask-threshold",
        type=int,
        help="faithfulness: also play the pointing game on pixels brighter than this (ink on dark, as digits)",
    )
    e.add_argument("--curve-steps", type=int, default=0, help="faithfulness: deletion/insertion steps (default 16)")
    e.add_argument("--json", action="store_true", help="faithfulness: print the scores as one JSON object")
    e.add_argument("--output-dir", type=Path, default=Path("explanations"))
    e.add_argument("--timeout", type=float, default=120.0, help="deadline per call in seconds")
    e.add_argument("--tls-ca", type=Path, help="PEM CA that signed the server's certificate (enables TLS)")
    e.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    e.add_argument("--tls-key", type=Path, help="client key for mutual TLS")
    e.add_argument("--token-file", type=Path, help="file holding a bearer token (or set CNNSERVE_TOKEN)")
    e.set_defaults(func=_explain)


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


def image_message(data: bytes | np.ndarray, image_id: str = "") -> explainer_pb2.ExplainImage:
    """Encoded bytes, or a uint8 array [H, W] / [H, W, C], as an ExplainImage."""
    if isinstance(data, bytes):
        return explainer_pb2.ExplainImage(id=image_id, encoded=data)
    array = np.asarray(data)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"raw images are uint8 [H, W] or [H, W, C]; got {array.dtype} {list(array.shape)}")
    if array.ndim == 2:
        array = array[..., None]
    h, w, c = array.shape
    raw = explainer_pb2.RawImage(data=np.ascontiguousarray(array).tobytes(), height=h, width=w, channels=c)
    return explainer_pb2.ExplainImage(id=image_id, raw=raw)


def _image(path: Path) -> explainer_pb2.ExplainImage:
    if path.suffix == ".npy":
        return image_message(np.load(path), path.stem)
    return image_message(path.read_bytes(), path.stem)


def _explain(args) -> int:
    if args.what in ("heatmap", "activations") and not args.images:
        print(f"error: --what {args.what} needs at least one image", file=sys.stderr)
        return 2
    token = args.token_file.read_text().strip() if args.token_file else None
    if is_http(args.server):
        if args.what == "faithfulness":
            print("error: --what faithfulness is a gRPC call; give the server's gRPC address", file=sys.stderr)
            return 2
        return _explain_http(args, token)
    channel, raw = open_channel(
        args.server,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=token,
        max_message_bytes=EXPLAIN_MESSAGE_BYTES,
    )
    with raw:
        stub = explainer_pb2_grpc.ExplainerStub(channel)
        try:
            if args.what == "faithfulness":
                return _faithfulness(stub, args)
            if args.what == "heatmap":
                return _heatmaps(stub, args)
            if args.what == "activations":
                return _activations(stub, args)
            if args.what == "filters":
                return _filters(stub, args)
            return _layers(stub, args)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1


def _heatmaps(stub, args) -> int:
    request = explainer_pb2.HeatmapRequest(
        **_model(args),
        images=[_image(p) for p in args.images],
        method=HEATMAP_METHOD_ENUMS.get(args.method, 0),
        layer=args.layer,
    )
    if args.target_class is not None:
        request.target_class = args.target_class
    if args.alpha is not None:
        request.overlay_alpha = args.alpha
    response = stub.Heatmap(request, timeout=args.timeout)
    for path, result in zip(args.images, response.results, strict=True):
        predicted = {"class": result.predicted_class, "label": result.predicted_label}
        line = {"method": HEATMAP_METHODS[response.method], "layer": response.layer, "predicted": predicted}
        predicted["score"] = round(result.predicted_score, 6)
        line["target"] = {"class": result.target_class, "score": round(result.target_score, 6)}
        files = {"overlay.png": result.overlay_png, "heatmap.npy": from_float_tensor(result.heatmap)}
        _save(args.output_dir, path, files, line, overlay="overlay.png", heatmap="heatmap.npy")
    return 0


def _activations(stub, args) -> int:
    images = [_image(p) for p in args.images]
    request = explainer_pb2.ActivationsRequest(
        **_model(args), images=images, layer=args.layer, channels=parse_indices(args.channels)
    )
    response = stub.Activations(request, timeout=args.timeout)
    for path, result in zip(args.images, response.results, strict=True):
        line = {"layer": response.layer, "channels": len(response.channels)}
        line["dead_channels"] = list(result.dead_channels)
        files = {"grid.png": result.grid_png, "activations.npy": from_float_tensor(result.activations)}
        _save(args.output_dir, path, files, line, grid="grid.png")
    return 0


def _save(output_dir: Path, image: Path, files: dict, line: dict, **named: str) -> None:
    """Write ``files`` (bytes, or arrays as .npy) to OUTPUT_DIR/<image>/ and print one JSON line about them,
    with ``named`` entries pointing at the files of those names."""
    folder = output_dir / image.stem
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            np.save(folder / name, content)
    print(json.dumps({"image": str(image), **line, **{key: str(folder / name) for key, name in named.items()}}))


def _filters(stub, args) -> int:
    request = explainer_pb2.FilterPatternsRequest(
        **_model(args),
        filters=parse_indices(args.filters),
        **fields_of(args, "layer", "steps", "step_size", "size", "regularized", "seed"),
    )
    response = stub.FilterPatterns(request, timeout=args.timeout)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for pattern in response.patterns:
        path = args.output_dir / f"{response.layer}_filter_{pattern.filter}.png"
        path.write_bytes(pattern.png)
        print(json.dumps({**fields_of(pattern, "filter", "activation", "cached"), "png": str(path)}))
    return 0


def _model(args) -> dict:
    return {"model_name": args.model, "model_version": args.version}


SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
MAX_SAMPLES = 64  # the sidecar's default max_images


def sample_files(folder: Path, limit: int = MAX_SAMPLES) -> list[Path]:
    """The first ``limit`` image files of ``folder`` (sorted by name)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)[:limit]


def _faithfulness(stub, args) -> int:
    folder = args.samples
    if folder is None or not folder.is_dir():
        print("error: --what faithfulness needs --samples DIR, a folder of images", file=sys.stderr)
        return 2
    files = sample_files(folder)
    if not files:
        print(f"error: no PNG, JPEG or .npy images in {folder}", file=sys.stderr)
        return 2
    request = explainer_pb2.FaithfulnessRequest(
        **_model(args),
        images=[_image(p) for p in files],
        layers=[name for name in args.layer.split(",") if name],
        methods=[HEATMAP_METHOD_ENUMS[args.method]] if args.method else [],
        steps=args.curve_steps,
    )
    if args.mask_threshold is not None:
        request.mask_threshold = args.mask_threshold
    response = stub.Faithfulness(request, timeout=args.timeout)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True)))
        return 0
    print(f"{response.model_name} version {response.model_version}: {response.samples} samples from {folder}, "
          f"scored in {response.seconds:.1f}s")  # fmt: skip
    print_scores(response.scores, (response.best_layer, response.best_method))
    best = f"{response.best_method} at {response.best_layer}" if response.best_layer else "none passes randomisation"
    served = f"{response.default_heatmap_method} at {response.default_heatmap_layer}"
    print(f"best on these samples (*): {best}; served default: {served}")
    return 0


def _layers(stub, args) -> int:
    response = stub.ListLayers(explainer_pb2.ListLayersRequest(**_model(args)), timeout=args.timeout)
    print(
        f"{response.model_name} version {response.model_version}: input {list(response.input_shape)}, "
        f"default heatmap layer {response.default_heatmap_layer}, method {response.default_heatmap_method}"
    )
    for layer in response.layers:
        mark = "*" if layer.spatial else " "
        print(f" {mark} {layer.name:<24} {layer.class_name:<20} {list(layer.output_shape)}")
    if response.faithfulness:
        print(f"faithfulness ({response.faithfulness_samples} samples, {response.faithfulness_source}):")
        print_scores(response.faithfulness, (response.default_heatmap_layer, response.default_heatmap_method))
    return 0


def _explain_http(args, token: str | None) -> int:
    """The explainer routes of the HTTP front door, writing the same files and lines as over gRPC (activations
    come back as the grid only: the route leaves the float tensors out)."""
    tls = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    base = HttpClient.model_path("/v1", args.model, args.version) + "/explain"
    with HttpClient(args.server, timeout=args.timeout, token=token, **tls) as client:
        try:
            if args.what == "layers":
                answer = client.get_json(base + "/layers")
                print(
                    f"{answer['model_name']} version {answer['model_version']}: input {answer.get('input_shape')}, "
                    f"default heatmap layer {answer.get('default_heatmap_layer')}"
                )
                for layer in answer.get("layers", []):
                    mark = "*" if layer.get("spatial") else " "
                    print(f" {mark} {layer['name']:<24} {layer.get('class_name', ''):<20} {layer.get('output_shape')}")
                return 0
            if args.what == "filters":
                fields = fields_of(args, "layer", "steps", "size", "regularized", "seed")
                body = {**fields, "filters": parse_indices(args.filters)}
                if args.step_size:
                    body["step_size"] = args.step_size
                answer = client.post_json(base + "/filters", body)
                args.output_dir.mkdir(parents=True, exist_ok=True)
                for pattern in answer["patterns"]:
                    path = args.output_dir / f"{answer['layer']}_filter_{pattern['filter']}.png"
                    path.write_bytes(base64.b64decode(pattern["png"]))
                    line = {k: pattern[k] for k in ("filter", "activation", "cached")}
                    print(json.dumps({**line, "png": str(path)}))
                return 0
            for path in args.images:
                image = {"image": base64.b64encode(path.read_bytes()).decode()}
                if args.what == "heatmap":
                    body = {**image, "method": args.method, "layer": args.layer}
                    if args.target_class is not None:
                        body["target_class"] = args.target_class
                    if args.alpha is not None:
                        body["overlay_alpha"] = args.alpha
                    a = client.post_json(base + "/heatmap", body)
                    heatmap = np.array(a["heatmap"]["data"], np.float32).reshape(a["heatmap"]["shape"])
                    line = {"method": a["method"], "layer": a["layer"]}
                    line["predicted"] = {
                        "class": a["predicted_class"],
                        "label": a["predicted_label"],
                        "score": round(a["predicted_score"], 6),
                    }
                    line["target"] = {"class": a["target_class"], "score": round(a["target_score"], 6)}
                    files = {"overlay.png": base64.b64decode(a["overlay_png"]), "heatmap.npy": heatmap}
                    _save(args.output_dir, path, files, line, overlay="overlay.png", heatmap="heatmap.npy")
                else:
                    body = {**image, "layer": args.layer, "channels": parse_indices(args.channels)}
                    a = client.post_json(base + "/activations", body)
                    line = {"layer": a["layer"], "channels": len(a["channels"]), "dead_channels": a["dead_channels"]}
                    _save(args.output_dir, path, {"grid.png": base64.b64decode(a["grid_png"])}, line, grid="grid.png")
            return 0
        except HttpCallError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


def print_scores(scores, default: tuple[str, str] = ("", "")) -> None:
    """A table of FaithfulnessScore messages; ``default`` (layer, method) is marked with *."""
    print(f"   {'layer':<16} {'method':<18} {'deletion':>8} {'insertion':>9} {'pointing':>8} {'random r':>8}  score")
    for s in scores:
        mark = "*" if (s.layer, s.method) == default else " "
        pointing = f"{s.pointing_game:.2f}" if s.HasField("pointing_game") else "-"
        verdict = "" if s.passes_randomisation else " (fails randomisation)"
        print(
            f" {mark} {s.layer:<16} {s.method:<18} {s.deletion_auc:>8.3f} {s.insertion_auc:>9.3f} {pointing:>8} "
            f"{s.randomisation_correlation:>8.2f}  {s.score:.3f}{verdict}"
        )
