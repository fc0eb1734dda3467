"""KServe v2 REST bodies <-> the inference handler's plain requests and results, with Triton's binary extension.

A request body is JSON, or (binary tensor data extension) a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw bytes of the inputs that declare ``parameters.binary_data_size``, in input order.
An answer is JSON, or the JSON header followed by the raw bytes of the outputs asked for as binary
(``parameters.binary_data`` on a requested output, or ``binary_data_output`` on the request for every output).

Every check says what was received and what was expected; the handler then applies the same rules as gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from cnnserve.protocol import DATATYPE_TO_NUMPY, serialize_bytes
from cnnserve.server.inference import InferRequest, InferResult, RequestedOutput
from cnnserve.server.tensors import WireTensor
from cnnserve.service.errors import InvalidArgument

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"

# What a JSON number may become per datatype kind (numpy's kind of the parsed values).
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


@dataclass(frozen=True)
class ParsedInfer:
    request: InferRequest
    binary_outputs: frozenset[str]  # outputs answered as raw bytes after the JSON header
    binary_default: bool  # binary_data_output: every output not asked otherwise is binary
    timeout_us: int | None  # Triton's ``timeout`` request parameter


def loads(body: bytes | memoryview, what: str = "request body") -> dict:
    """A JSON object, or InvalidArgument naming why not (malformed, not UTF-8, too deeply nested, not an object)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def split_binary(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON header and the binary tail of a request (the whole body is JSON without the header)."""
    if header_length is None:
        return loads(body), memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidArgument(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
    if not 0 < n <= len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length is {n}, but the body has {len(body)} bytes; it must be between 1 "
            "and the body's length"
        )
    view = memoryview(body)
    return loads(view[:n], "JSON header"), view[n:]


def _int_param(params: dict, key: str, where: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{where}: parameter {key!r} must be an integer, got {value!r}")
    return value


def _bool_param(params: dict, key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where}: parameter {key!r} must be true or false, got {value!r}")
    return value


def _params(obj: dict, where: str) -> dict:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgument(f"{where}: 'parameters' must be an object")
    return params


def _shape(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidArgument(f"{where}: 'shape' must be a list of integers, got {value!r}")
    return tuple(value)


def _typed(name: str, datatype: str, data) -> np.ndarray | list:
    """JSON ``data`` (flat or nested row-major) as a flat array, its values checked against the datatype."""
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).ravel()
        if not all(isinstance(v, str) for v in flat):
            raise InvalidArgument(f"input {name!r}: BYTES data must be strings")
        return [v.encode() for v in flat]
    dtype = DATATYPE_TO_NUMPY.get(datatype)
    if dtype is None:
        raise InvalidArgument(f"input {name!r}: unknown datatype {datatype!r}")
    try:
        values = np.asarray(data)
    except (ValueError, OverflowError) as exc:  # ragged nesting, integers past 64 bits
        raise InvalidArgument(f"input {name!r}: data is not a regular array of numbers ({exc})") from None
    accepted = _ACCEPTED_KINDS[dtype.kind]
    if values.size and values.dtype.kind not in accepted:
        raise InvalidArgument(
            f"input {name!r}: data holds {_kind_name(values.dtype.kind)} values, expected "
            f"{'true/false' if dtype.kind == 'b' else 'integers' if dtype.kind in 'iu' else 'numbers'} for {datatype}"
        )
    return values.ravel()


def _kind_name(kind: str) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "U": "string", "O": "mixed"}.get(
        kind, "non-numeric"
    )


def parse_infer(model: str, version: str, body: bytes, header_length: str | None) -> ParsedInfer:
    """A v2 infer request body (JSON or binary extension) as the handler's InferRequest."""
    header, tail = split_binary(body, header_length)
    request_params = _params(header, "request")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("request: 'inputs' must be a non-empty list")
    tensors: list[WireTensor] = []
    offset = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise InvalidArgument(f"inputs[{i}] must be an object")
        name, datatype = t.get("name"), t.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidArgument(f"inputs[{i}]: 'name' and 'datatype' must be strings")
        shape = _shape(t.get("shape"), f"input {name!r}")
        size = _int_param(_params(t, f"input {name!r}"), "binary_data_size", f"input {name!r}")
        if size is not None:
            if "data" in t:
                raise InvalidArgument(f"input {name!r}: has both 'data' and parameters.binary_data_size")
            if size < 0 or offset + size > len(tail):
                raise InvalidArgument(
                    f"input {name!r}: binary_data_size {size} at offset {offset} runs past the binary data "
                    f"({len(tail)} bytes after the JSON header)"
                )
            tensors.append(WireTensor(name, datatype, shape, raw=tail[offset : offset + size]))
            offset += size
            continue
        if "data" not in t:
            raise InvalidArgument(f"input {name!r}: no 'data' and no parameters.binary_data_size")
        typed = _typed(name, datatype, t["data"])
        if datatype == "FP16":  # the gRPC path takes FP16 raw only: raw it is
            if len(typed) != int(np.prod(shape, dtype=np.int64)):
                raise InvalidArgument(f"input {name!r}: data has {len(typed)} elements for shape {list(shape)}")
            tensors.append(WireTensor(name, datatype, shape, raw=np.asarray(typed, dtype="<f2").tobytes()))
        else:
            tensors.append(WireTensor(name, datatype, shape, typed=typed))
    if offset != len(tail):
        raise InvalidArgument(
            f"the body has {len(tail)} bytes of binary data after the JSON header, but the inputs declare {offset}"
        )
    outputs, binary = [], set()
    for j, out in enumerate(header.get("outputs") or []):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidArgument(f"outputs[{j}] must be an object with a 'name'")
        where = f"output {out['name']!r}"
        params = _params(out, where)
        outputs.append(RequestedOutput(out["name"], _int_param(params, "classification", where)))
        if "binary_data" in params:
            if _bool_param(params, "binary_data", where):
                binary.add(out["name"])
            else:
                binary.add("!" + out["name"])  # asked for as JSON, whatever binary_data_output says
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("request: 'id' must be a string")
    timeout = _int_param(request_params, "timeout", "request")
    if timeout is not None and timeout < 0:
        raise InvalidArgument(f"request: parameter 'timeout' must be >= 0 microseconds, got {timeout}")
    return ParsedInfer(
        InferRequest(model, version, request_id, tensors, outputs),
        frozenset(binary),
        _bool_param(request_params, "binary_data_output", "request"),
        timeout,
    )


def render_infer(result: InferResult, parsed: ParsedInfer) -> tuple[bytes, int | None]:
    """The answer body and, when some output is binary, the length of its JSON header."""
    outputs, chunks = [], []
    for out in result.outputs:
        binary = out.name in parsed.binary_outputs or (
            parsed.binary_default and "!" + out.name not in parsed.binary_outputs
        )
        entry = {"name": out.name, "datatype": out.datatype, "shape": list(out.data.shape)}
        if binary:
            raw = serialize_bytes(out.data.ravel().tolist()) if out.datatype == "BYTES" else out.data.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif out.datatype == "BYTES":
            entry["data"] = [v.decode(errors="replace") for v in out.data.ravel().tolist()]
        else:
            entry["data"] = np.ascontiguousarray(out.data).ravel()
        outputs.append(entry)
    answer = {"model_name": result.model_name, "model_version": result.model_version, "outputs": outputs}
    if result.id:
        answer["id"] = result.id
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
