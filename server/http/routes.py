"""The routes of the HTTP front door: KServe v2 REST as Triton serves it, the image API, the explainer, OpenAPI.

Each handler turns the HTTP request into a call of the transport-free handlers the gRPC servicers use
(``server/inference.py``, ``server/images.py``, ``server/explainer.py``) and renders its plain answer.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import orjson

from cnnserve import __version__
from cnnserve._proto.cnnserve.v1 import explainer_pb2 as xpb
from cnnserve.protocol import HEATMAP_METHOD_ENUMS, HEATMAP_METHODS, from_float_tensor
from cnnserve.server.http import v2
from cnnserve.server.http.convert import proto_to_dict
from cnnserve.server.http.messages import HttpError, Response, Route, b64decode, error, json_response
from cnnserve.service.errors import InvalidArgument, NotFound, ServingError, Unavailable

SERVER_NAME = "cnnserve"
EXTENSIONS = [
    "classification",
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
    "schedule_policy",
]
IMAGE_TYPES = ("image/png", "image/jpeg")


class Routes:
    """Path -> Route, and the handlers (``server``: the CnnServer)."""

    def __init__(self, server) -> None:

        self.server = server
        r = Route
        self.static = {
            ("GET", "/v2"): r(self.server_metadata, "GET /v2"),
            ("GET", "/v2/health/live"): r(self.live, "GET /v2/health/live", open=True, gated=False),
            ("GET", "/v2/health/ready"): r(self.ready, "GET /v2/health/ready", open=True, gated=False),
            ("POST", "/v2/repository/index"): r(self.repository_index, "POST /v2/repository/index"),
            ("GET", "/v2/models/stats"): r(self.stats, "GET /v2/models/stats"),
            ("GET", "/openapi.json"): r(self.openapi, "GET /openapi.json", open=True, gated=False),
        }
        # /v2/models/{name}[/versions/{v}]<suffix>
        self.model = {
            ("GET", ""): r(self.model_metadata, "GET /v2/models/{name}"),
            ("GET", "ready"): r(self.model_ready, "GET /v2/models/{name}/ready"),
            ("POST", "infer"): r(self.infer, "POST /v2/models/{name}/infer", admitted="ModelInfer"),
            ("GET", "config"): r(self.config, "GET /v2/models/{name}/config"),
            ("GET", "stats"): r(self.stats, "GET /v2/models/{name}/stats"),
        }
        self.repository = {
            "load": r(self.load, "POST /v2/repository/models/{name}/load"),
            "unload": r(self.unload, "POST /v2/repository/models/{name}/unload"),
        }
        # /v1/models/{name}[/versions/{v}]/classify, /v1/models/{name}/explain/<what>
        self.v1 = {
            ("POST", "classify"): r(self.classify, "POST /v1/models/{name}/classify", admitted="Classify"),
            ("GET", "explain/layers"): r(self.layers, "GET /v1/models/{name}/explain/layers", admitted="ListLayers"),
            ("POST", "explain/heatmap"): r(self.heatmap, "POST /v1/models/{name}/explain/heatmap", admitted="Heatmap"),
            ("POST", "explain/activations"): r(
                self.activations, "POST /v1/models/{name}/explain/activations", admitted="Activations"
            ),
            ("POST", "explain/filters"): r(
                self.filters, "POST /v1/models/{name}/explain/filters", admitted="FilterPatterns"
            ),
        }

    # -- matching ---------------------------------------------------------------------------------------------

    def match(self, request):
        """The route of ``request`` (path parameters set on it), None when no route has its path; 405 when one
        has it with other methods."""

        path = request.path.rstrip("/") or "/"
        method = "GET" if request.method == "HEAD" else request.method
        route = self.static.get((method, path))
        if route is not None:
            return route
        if any(p == path for _, p in self.static):
            allowed = sorted({m for m, p in self.static if p == path})
            raise _method_not_allowed(request, allowed)
        parts = path.split("/")
        if len(parts) >= 4 and parts[1] in ("v1", "v2") and parts[2] == "models" and parts[3]:
            table = self.model if parts[1] == "v2" else self.v1
            request.params["name"] = parts[3]
            rest = parts[4:]
            if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
                request.params["version"] = rest[1]
                rest = rest[2:]
            suffix = "/".join(rest)
            route = table.get((method, suffix))
            if route is not None:
                return route
            allowed = sorted(m for m, s in table if s == suffix)
            if allowed:
                raise _method_not_allowed(request, allowed)
            return None
        if len(parts) == 6 and parts[1:3] == ["v2", "repository"] and parts[3] == "models" and parts[4]:
            route = self.repository.get(parts[5])
            if route is not None:
                if method != "POST":
                    raise _method_not_allowed(request, ["POST"])
                request.params["name"] = parts[4]
                return route
        return None

    # -- health and metadata ----------------------------------------------------------------------------------

    async def live(self, request):

        return Response(200) if self.server.state.live else error(503, "server is not live")

    async def ready(self, request):

        state = self.server.state
        if state.ready and self.server.models.ready():
            return Response(200)
        if self.server.gate.draining:
            return error(503, "server is shutting down; retry on another replica")
        return error(503, "server is not ready: models are still loading")

    async def server_metadata(self, request):

        return json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    def _served(self, request):
        return self.server.models.get(request.params["name"], request.params.get("version", ""))

    async def model_metadata(self, request):

        spec = self._served(request).spec
        versions = list(self.server.models.models[spec.name].versions)

        def tensors(specs):
            return [{"name": t.name, "datatype": t.datatype, "shape": spec.full_shape(t)} for t in specs]

        return json_response(
            {
                "name": spec.name,
                "versions": versions,
                "platform": spec.platform,
                "inputs": tensors(spec.inputs),
                "outputs": tensors(spec.outputs),
            }
        )

    async def model_ready(self, request):

        try:
            self._served(request)
        except NotFound:
            raise
        except ServingError as exc:
            return error(503, exc.message)
        if not self.server.state.ready:
            return error(503, "server is not ready")
        return Response(200)

    async def config(self, request):

        return json_response(proto_to_dict(self._served(request).spec.config))

    async def stats(self, request):

        if "name" in request.params:
            served = [self._served(request)]
        else:
            served = self.server.models.served_versions()
        return json_response({"model_stats": [version.stats.snapshot() for version in served]})

    # -- repository -------------------------------------------------------------------------------------------

    async def repository_index(self, request):

        body = await request.body()
        ready_only = False
        if body.strip():
            options = v2.loads(body)
            ready_only = options.get("ready", False)
            if not isinstance(ready_only, bool):
                raise InvalidArgument("'ready' must be true or false")
        return json_response(
            [
                {"name": name, "version": version, "state": state, "reason": reason}
                for name, version, state, reason in self.server.models.index(ready_only=ready_only)
            ]
        )

    async def load(self, request):

        body = await request.body()
        if body.strip():
            v2.loads(body)  # parameters (config overrides, files) are not supported; a bad body is still a 400
        await self.server.models.load(request.params["name"])
        return Response(200)

    async def unload(self, request):

        body = await request.body()
        if body.strip():
            v2.loads(body)
        await self.server.models.unload(request.params["name"])
        return Response(200)

    # -- inference --------------------------------------------------------------------------------------------

    async def infer(self, request):

        body = await request.body()
        parsed = v2.parse_infer(
            request.params["name"], request.params.get("version", ""), body, request.headers.get(v2.HEADER_LENGTH)
        )
        result = await self.server.inference.infer(parsed.request, deadline=request.deadline(parsed.timeout_us))
        answer, header_length = v2.render_infer(result, parsed)
        if header_length is None:
            return Response(200, answer)
        return Response(
            200,
            answer,
            [(b"content-type", v2.BINARY.encode()), (b"inference-header-content-length", b"%d" % header_length)],
        )

    async def classify(self, request):

        kind = request.content_type()
        if kind not in IMAGE_TYPES:
            raise HttpError(
                415, f"Content-Type {kind or 'none'!r} is not an image type served; send image/png or image/jpeg"
            )
        top_k = request.int_query("top_k", 0)
        include_input = request.bool_query("include_input")
        image = await request.body()
        if not image:
            raise InvalidArgument("the body is empty: send the image bytes")
        result = await self.server.images.classify(
            request.params["name"], request.params.get("version", ""), [image], top_k
        )
        answer = {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "predictions": [{"index": p.index, "label": p.label, "score": p.score} for p in result.predictions[0]],
        }
        if include_input:
            answer["input_png"] = await asyncio.to_thread(_png_base64, result.inputs[0])
        return json_response(answer)

    # -- explainer --------------------------------------------------------------------------------------------

    async def _forward(self, request, method: str, message):
        metadata = ()
        if "authorization" in request.headers:
            metadata = (("authorization", request.headers["authorization"]),)
        return await self.server.explainer.forward(method, message, timeout=None, metadata=metadata)

    async def _explain_input(self, request) -> tuple[dict, bytes | None]:
        """The JSON fields and the image: a JSON body with base64 ``image``, or the image as the body and the
        fields as query parameters."""

        kind = request.content_type()
        body = await request.body()
        if kind in IMAGE_TYPES:
            if not body:
                raise InvalidArgument("the body is empty: send the image bytes")
            return dict(request.query), body
        if kind not in ("application/json", ""):
            raise HttpError(
                415, f"Content-Type {kind!r} is not served here; send application/json, image/png or image/jpeg"
            )
        fields = v2.loads(body) if body.strip() else {}
        image = b64decode(fields["image"], "'image'") if "image" in fields else None
        return fields, image

    async def layers(self, request):

        message = xpb.ListLayersRequest(
            model_name=request.params["name"], model_version=request.params.get("version", "")
        )
        return json_response(proto_to_dict(await self._forward(request, "ListLayers", message)))

    async def heatmap(self, request):

        fields, image = await self._explain_input(request)
        if image is None:
            raise InvalidArgument("no image: send 'image' (base64 PNG or JPEG) or the image itself as the body")
        method = fields.get("method") or ""
        if method and method not in HEATMAP_METHOD_ENUMS:
            raise InvalidArgument(f"unknown method {method!r}; methods: {sorted(HEATMAP_METHOD_ENUMS)}")
        message = xpb.HeatmapRequest(
            model_name=request.params["name"],
            model_version=request.params.get("version", ""),
            images=[xpb.ExplainImage(encoded=image)],
            method=HEATMAP_METHOD_ENUMS.get(method, 0),
            layer=_str_field(fields, "layer"),
        )
        if fields.get("target_class") not in (None, ""):
            message.target_class = _int_field(fields, "target_class")
        if fields.get("overlay_alpha") not in (None, ""):
            message.overlay_alpha = _float_field(fields, "overlay_alpha")
        answer = await self._forward(request, "Heatmap", message)
        if not answer.results:
            raise Unavailable("the explainer returned no result")
        result = answer.results[0]
        if "image/png" in request.headers.get("accept", ""):
            return Response(200, result.overlay_png, [(b"content-type", b"image/png")])
        heatmap = from_float_tensor(result.heatmap)
        scored = {"faithfulness": proto_to_dict(answer.faithfulness)} if answer.HasField("faithfulness") else {}
        return json_response(
            {
                **scored,
                "model_name": answer.model_name,
                "model_version": answer.model_version,
                "layer": answer.layer,
                "method": HEATMAP_METHODS.get(answer.method, "gradcam"),
                "pre_softmax": answer.pre_softmax,
                "predicted_class": result.predicted_class,
                "predicted_label": result.predicted_label,
                "predicted_score": result.predicted_score,
                "target_class": result.target_class,
                "target_score": result.target_score,
                "heatmap": {"shape": list(heatmap.shape), "data": np.ascontiguousarray(heatmap).ravel()},
                "overlay_png": _b64(result.overlay_png),
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    async def activations(self, request):

        fields, image = await self._explain_input(request)
        if image is None:
            raise InvalidArgument("no image: send 'image' (base64 PNG or JPEG) or the image itself as the body")
        message = xpb.ActivationsRequest(
            model_name=request.params["name"],
            model_version=request.params.get("version", ""),
            images=[xpb.ExplainImage(encoded=image)],
            layer=_str_field(fields, "layer"),
            channels=_int_list(fields, "channels"),
            omit_tensors=True,
        )
        answer = await self._forward(request, "Activations", message)
        result = answer.results[0] if answer.results else None
        return json_response(
            {
                "model_name": answer.model_name,
                "model_version": answer.model_version,
                "layer": answer.layer,
                "channels": list(answer.channels),
                "grid_columns": answer.grid_columns,
                "grid_png": _b64(result.grid_png) if result else "",
                "dead_channels": list(result.dead_channels) if result else [],
            }
        )

    async def filters(self, request):

        body = await request.body()
        fields = v2.loads(body) if body.strip() else {}
        message = xpb.FilterPatternsRequest(
            model_name=request.params["name"],
            model_version=request.params.get("version", ""),
            layer=_str_field(fields, "layer"),
            filters=_int_list(fields, "filters"),
            steps=_int_field(fields, "steps") if "steps" in fields else 0,
            size=_int_field(fields, "size") if "size" in fields else 0,
            regularized=bool(fields.get("regularized", False)),
            seed=_int_field(fields, "seed") if "seed" in fields else 0,
        )
        if "step_size" in fields:
            message.step_size = _float_field(fields, "step_size")
        answer = await self._forward(request, "FilterPatterns", message)
        return json_response(
            {
                "model_name": answer.model_name,
                "model_version": answer.model_version,
                "layer": answer.layer,
                "patterns": [
                    {"filter": p.filter, "png": _b64(p.png), "activation": p.activation, "cached": p.cached}
                    for p in answer.patterns
                ],
            }
        )

    # -- the document -----------------------------------------------------------------------------------------

    async def openapi(self, request):
        from cnnserve.server.http.openapi import document

        return Response(200, document())


def _method_not_allowed(request, allowed):
    return HttpError(
        405,
        f"{request.method} is not allowed on {request.path}; use {' or '.join(allowed)}",
        [(b"allow", ", ".join(allowed).encode())],
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _png_base64(array: np.ndarray) -> str:
    from PIL import Image

    image = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return _b64(buf.getvalue())


def _str_field(fields: dict, key: str) -> str:
    value = fields.get(key) or ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key!r} must be a string, got {value!r}")
    return value


def _int_field(fields: dict, key: str) -> int:
    value = fields.get(key)
    if isinstance(value, str):  # from a query string
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidArgument(f"{key!r} must be an integer, got {value!r}")


def _float_field(fields: dict, key: str) -> float:
    value = fields.get(key)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InvalidArgument(f"{key!r} must be a number, got {value!r}")


def _int_list(fields: dict, key: str) -> list[int]:
    value = fields.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, str):  # query string: comma-separated
        value = [v for v in value.split(",") if v.strip()]
        try:
            return [int(v) for v in value]
        except ValueError:
            raise InvalidArgument(f"{key!r} must be a list of integers") from None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidArgument(f"{key!r} must be a list of integers, got {value!r}")
    return value
