"""Protobuf <-> plain values for cnnserve.v1.Explainer (no TensorFlow; the client CLI uses it too)."""

from __future__ import annotations

import numpy as np

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve.server.errors import InvalidArgument

METHOD_NAMES: dict[int, str] = {
    pb.HEATMAP_METHOD_UNSPECIFIED: "gradcam",
    pb.HEATMAP_METHOD_GRADCAM: "gradcam",
    pb.HEATMAP_METHOD_GRAD_X_ACTIVATION: "grad_x_activation",
    pb.HEATMAP_METHOD_GRADCAM_PLUS_PLUS: "gradcam_plus_plus",
    pb.HEATMAP_METHOD_SCORE_CAM: "score_cam",
}
METHOD_ENUMS: dict[str, int] = {name: value for value, name in METHOD_NAMES.items() if value}


def method_name(value: int) -> str:
    try:
        return METHOD_NAMES[value]
    except KeyError:
        raise InvalidArgument(f"unknown heatmap method {value}; expected one of {sorted(METHOD_NAMES)}") from None


def to_tensor(array: np.ndarray) -> pb.FloatTensor:
    array = np.ascontiguousarray(array, dtype="<f4")
    return pb.FloatTensor(shape=list(array.shape), data=array.tobytes())


def from_tensor(tensor: pb.FloatTensor) -> np.ndarray:
    """FloatTensor -> float32 array; the byte count must match the shape."""
    shape = [int(d) for d in tensor.shape]
    if any(d < 0 for d in shape) or len(tensor.data) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"FloatTensor of shape {shape} has {len(tensor.data)} bytes")
    return np.frombuffer(tensor.data, dtype="<f4").reshape(shape)


def image_message(data: bytes | np.ndarray, image_id: str = "") -> pb.ExplainImage:
    """Encoded bytes, or a uint8 array [H, W] / [H, W, C], as an ExplainImage."""
    if isinstance(data, bytes):
        return pb.ExplainImage(id=image_id, encoded=data)
    array = np.asarray(data)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"raw images are uint8 [H, W] or [H, W, C]; got {array.dtype} {list(array.shape)}")
    if array.ndim == 2:
        array = array[..., None]
    h, w, c = array.shape
    raw = pb.RawImage(data=np.ascontiguousarray(array).tobytes(), height=h, width=w, channels=c)
    return pb.ExplainImage(id=image_id, raw=raw)
