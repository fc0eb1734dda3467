"""Server-side image decoding for the image-level API: PNG/JPEG bytes -> the model's uint8 NHWC input."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnserve.service.errors import FailedPrecondition, InvalidArgument

ALLOWED_FORMATS = {"PNG", "JPEG"}
# Refuse by header before decoding: a 100 KB PNG can claim 50,000 x 50,000 pixels (decompression bomb).
MAX_PIXELS = 50_000_000
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class ImageDecoding:
    """How encoded images become model input, from metadata.json's "preprocessing"."""

    height: int
    width: int
    channels: int
    resize: str = "bilinear"

    @classmethod
    def from_metadata(cls, model: str, metadata: dict[str, Any]) -> ImageDecoding:
        pre = metadata.get("preprocessing")
        if not pre:
            raise FailedPrecondition(
                f"model {model!r} has no metadata.json preprocessing; use ModelInfer with tensors instead"
            )
        try:
            result = cls(int(pre["height"]), int(pre["width"]), int(pre["channels"]), pre.get("resize", "bilinear"))
        except (KeyError, TypeError, ValueError) as exc:
            raise FailedPrecondition(f"model {model!r}: metadata.json preprocessing is incomplete: {exc}") from exc
        if result.channels not in (1, 3) or result.resize not in _RESAMPLE:
            raise FailedPrecondition(f"model {model!r}: unsupported preprocessing {pre}")
        return result


def decode_image(data: bytes, pre: ImageDecoding, *, index: int = 0) -> np.ndarray:
    """Decode one PNG/JPEG into a uint8 array [H, W, C] of the model's size and channel count."""
    where = f"image {index}"
    if not data:
        raise InvalidArgument(f"{where}: empty image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            if img.format not in ALLOWED_FORMATS:
                raise InvalidArgument(f"{where}: format {img.format} is not accepted; send PNG or JPEG")
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise InvalidArgument(
                    f"{where}: {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels; refused before decoding"
                )
            img.load()
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(
            f"{where}: image dimensions exceed the pixel limit; refused before decoding ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidArgument(f"{where}: not a decodable PNG or JPEG ({exc.__class__.__name__})") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InvalidArgument(f"{where}: corrupt or truncated image data: {exc}") from exc

    img = img.convert("L" if pre.channels == 1 else "RGB")
    if img.size != (pre.width, pre.height):
        img = img.resize((pre.width, pre.height), _RESAMPLE[pre.resize])
    array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if pre.channels == 1 else array


def encode_png(array: np.ndarray) -> bytes:
    """Encode a uint8 [H, W] or [H, W, 1|3] array as PNG (used by clients, tests and the demo)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
