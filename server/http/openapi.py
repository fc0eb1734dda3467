"""The OpenAPI 3.1 document of the HTTP front door, served at /openapi.json (built once, then cached)."""

from __future__ import annotations

import functools

import orjson

from cnnserve import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _answers(ok: dict | None = None, *errors: int, ok_status: str = "200") -> dict:
    out = {ok_status: ok or {"description": "OK"}}
    descriptions = {
        400: "malformed JSON, wrong shape, datatype, byte count or parameter",
        401: "missing or invalid bearer token (when the server has tokens)",
        404: "unknown model, version or route",
        405: "wrong method",
        408: "the request did not arrive in time (slow or stalled client)",
        413: "body above the message limit",
        415: "an image type (Content-Type) not served",
        429: "admission limit or the model's queue is full; retry with backoff",
        503: "not ready, draining, or the explainer sidecar is unavailable",
        504: "the request's timeout passed before its batch ran",
    }
    for status in errors:
        out[str(status)] = {
            "description": descriptions[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_WORK = (400, 401, 404, 405, 413, 429, 503)

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                                "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
        "data": {"description": "row-major values, flat or nested; BYTES as strings", "type": "array"},
    },
}  # fmt: skip

_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {"type": "boolean"},
                "timeout": {"type": "integer", "description": "microseconds; the batcher drops it when passed"},
            },
        },
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data": {"type": "boolean"}, "classification": {"type": "integer"}},
                    },
                },
            },
        },
    },
}

_INFER_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}

_PREDICTIONS = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "label": {"type": "string"}, "score": {"type": "number"}},
            },
        },
        "input_png": {"type": "string", "description": "with include_input=1: base64 PNG the model saw"},
    },
}

_IMAGE_BODY = {
    "required": True,
    "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _explain(summary: str, fields: dict, answer: dict, image_body: bool = True) -> dict:
    content = {"application/json": {"schema": {"type": "object", "properties": fields}}}
    if image_body:
        content.update(_IMAGE_BODY["content"])
    return {
        "post": {
            "summary": summary,
            "parameters": [_NAME],
            "requestBody": {"required": True, "content": content},
            "responses": _answers(_json(answer), *_WORK, 415),
        }
    }


def _paths() -> dict:
    model_routes = {
        "": {"get": {"summary": "model metadata", "responses": _answers(_json({"type": "object"}), 401, 404)}},
        "/ready": {"get": {"summary": "model readiness (200 ready, 503 not)", "responses": _answers(None, 404, 503)}},
        "/config": {
            "get": {"summary": "the model's Triton config as JSON", "responses": _answers(_json({"type": "object"}))}
        },
        "/stats": {"get": {"summary": "Triton's statistics", "responses": _answers(_json({"type": "object"}), 404)}},
        "/infer": {
            "post": {
                "summary": "KServe v2 inference (JSON, or Triton's binary tensor data extension)",
                "parameters": [
                    {
                        "name": "Inference-Header-Content-Length",
                        "in": "header",
                        "schema": {"type": "integer"},
                        "description": "binary extension: the length of the JSON header at the start of the body",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _INFER_REQUEST},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": _answers(_json(_INFER_RESPONSE), *_WORK, 504),
            }
        },
    }
    paths: dict = {
        "/v2": {"get": {"summary": "server metadata", "responses": _answers(_json({"type": "object"}), 401)}},
        "/v2/health/live": {"get": {"summary": "liveness", "responses": _answers(None, 503)}},
        "/v2/health/ready": {"get": {"summary": "readiness (503 while loading or draining)", "responses": _answers(None, 503)}},
        "/v2/models/stats": {"get": {"summary": "statistics of every served version", "responses": _answers()}},
        "/v2/repository/index": {
            "post": {"summary": "the repository's models and their states", "responses": _answers(_json({"type": "array"}))}
        },
        "/v2/repository/models/{name}/load": {"post": {"summary": "load or reload", "parameters": [_NAME], "responses": _answers(None, 400, 404)}},
        "/v2/repository/models/{name}/unload": {"post": {"summary": "unload", "parameters": [_NAME], "responses": _answers(None, 404)}},
        "/openapi.json": {"get": {"summary": "this document", "responses": _answers()}},
    }  # fmt: skip
    for suffix, item in model_routes.items():
        for base, params in (
            ("/v2/models/{name}", [_NAME]),
            ("/v2/models/{name}/versions/{version}", [_NAME, _VERSION]),
        ):
            entry = {}
            for method, op in item.items():
                entry[method] = {**op, "parameters": params + op.get("parameters", [])}
            paths[base + suffix] = entry
    classify = {
        "post": {
            "summary": "classify one image (decoded and resized as gRPC Classify does)",
            "parameters": [
                {"name": "top_k", "in": "query", "schema": {"type": "integer", "default": 5}},
                {"name": "include_input", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}},
            ],
            "requestBody": _IMAGE_BODY,
            "responses": _answers(_json(_PREDICTIONS), *_WORK, 415, 504),
        }
    }
    for base, params in (("/v1/models/{name}", [_NAME]), ("/v1/models/{name}/versions/{version}", [_NAME, _VERSION])):
        paths[base + "/classify"] = {
            "post": {**classify["post"], "parameters": params + classify["post"]["parameters"]}
        }
    image = {"type": "string", "description": "base64 PNG or JPEG"}
    paths["/v1/models/{name}/explain/layers"] = {
        "get": {"summary": "the model's layers (ListLayers)", "parameters": [_NAME], "responses": _answers(_json({"type": "object"}), 401, 404, 503)}
    }  # fmt: skip
    paths["/v1/models/{name}/explain/heatmap"] = _explain(
        "class-activation heatmap of one image (Accept: image/png for the overlay itself)",
        {
            "image": image,
            "method": {"type": "string", "enum": ["gradcam", "grad_x_activation", "gradcam_plus_plus", "score_cam"]},
            "layer": {"type": "string"},
            "target_class": {"type": "integer"},
            "overlay_alpha": {"type": "number"},
        },
        {"type": "object", "properties": {"heatmap": {"type": "object"}, "overlay_png": {"type": "string"}}},
    )
    paths["/v1/models/{name}/explain/activations"] = _explain(
        "feature maps of a layer for one image",
        {"image": image, "layer": {"type": "string"}, "channels": {"type": "array", "items": {"type": "integer"}}},
        {"type": "object", "properties": {"grid_png": {"type": "string"}, "dead_channels": {"type": "array"}}},
    )
    paths["/v1/models/{name}/explain/filters"] = _explain(
        "filter patterns (activation maximisation)",
        {
            "layer": {"type": "string"},
            "filters": {"type": "array", "items": {"type": "integer"}},
            "steps": {"type": "integer"},
            "size": {"type": "integer"},
            "regularized": {"type": "boolean"},
            "seed": {"type": "integer"},
        },
        {"type": "object", "properties": {"patterns": {"type": "array"}}},
        image_body=False,
    )
    return paths


@functools.cache
def document() -> bytes:
    return orjson.dumps(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "cnnserve HTTP API",
                "version": __version__,
                "description": "KServe v2 REST as Triton serves it (binary tensor data, classification, "
                "statistics, repository), cnnserve's image API and the explainer. Errors are {\"error\": \"...\"}.",
            },
            "components": {
                "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}},
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}, {}],
            "paths": _paths(),
        }
    )  # fmt: skip
