"""``cnnserve faces extract VIDEO --person NAME``: face_cnn's data step (000_*.txt §3).

Reads a video with OpenCV, takes every ``--every``-th frame, finds the face with OpenCV's bundled Haar
cascade (``haarcascade_frontalface_default.xml``), crops it to face_cnn's 5:7 (width:height) aspect,
resizes it to 50x70 and writes ``OUTPUT/NAME/NAME_00012.png``. ``train face_cnn --data OUTPUT`` then reads
one folder per person.

When the cascade finds no face in a frame (no face, profile, poor light, or a drawn test pattern), the
crop falls back to the **centre box**: the largest 5:7 box centred in the frame, scaled to 60 % of the
frame's height (or width, when that binds). The reference always crops a fixed box (``(0, 100, 500, 800)``);
the centre box is that idea made independent of the resolution. ``--no-fallback`` skips such frames
instead. Every crop's method is listed in ``OUTPUT/NAME/crops.csv``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FACE_HEIGHT, FACE_WIDTH = 70, 50
CENTRE_BOX_FRACTION = 0.6
"""The fallback box's height as a fraction of the frame height (capped by the frame width)."""
FACE_MARGIN = 0.15
"""Margin added around a detected face box on each side, as a fraction of its size."""


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            "`cnnserve faces extract` needs OpenCV: pip install 'cnnserve[train]' (opencv-python-headless)"
        ) from exc
    return cv2


@dataclass(frozen=True)
class Crop:
    frame: int
    method: str
    """``haar`` (a detected face) or ``centre`` (the fallback box)."""
    box: tuple[int, int, int, int]
    """(x, y, w, h) in frame pixels."""
    path: Path


def haar_cascade():
    """OpenCV's bundled frontal-face Haar cascade."""
    cv2 = _cv2()
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"Could not load OpenCV's Haar cascade from {path} (opencv-python-headless < 5 ships it)")
    return cascade


def _fit_box(cx: float, cy: float, h: float, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """A 5:7 box of height ``h`` centred on (cx, cy), shrunk and shifted to lie inside the frame."""
    h = min(h, frame_h, frame_w * FACE_HEIGHT / FACE_WIDTH)
    w = h * FACE_WIDTH / FACE_HEIGHT
    x = min(max(cx - w / 2, 0), frame_w - w)
    y = min(max(cy - h / 2, 0), frame_h - h)
    return int(round(x)), int(round(y)), max(1, int(round(w))), max(1, int(round(h)))


def centre_box(frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """The documented fallback: a 5:7 box centred in the frame, ``CENTRE_BOX_FRACTION`` of its height."""
    return _fit_box(frame_w / 2, frame_h / 2, CENTRE_BOX_FRACTION * frame_h, frame_w, frame_h)


def detect_face(cascade, frame_bgr: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest detected face grown by ``FACE_MARGIN`` into a 5:7 box, or None."""
    cv2 = _cv2()
    gray = cv2.equalizeHist(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY))
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    frame_h, frame_w = frame_bgr.shape[:2]
    height = max(h * (1 + 2 * FACE_MARGIN), w * (1 + 2 * FACE_MARGIN) * FACE_HEIGHT / FACE_WIDTH)
    return _fit_box(x + w / 2, y + h / 2, height, frame_w, frame_h)


def crop_face(frame_bgr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box resized to 50x70 (W x H), RGB uint8 [70, 50, 3]."""
    cv2 = _cv2()
    x, y, w, h = box
    crop = frame_bgr[y : y + h, x : x + w]
    crop = cv2.resize(crop, (FACE_WIDTH, FACE_HEIGHT), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def extract_faces(
    video: str | Path,
    person: str,
    output: str | Path = "faces",
    every: int = 5,
    max_faces: int | None = None,
    fallback: bool = True,
) -> list[Crop]:
    """Crop faces from ``video`` into ``output/person/``; returns the crops written."""
    cv2 = _cv2()
    from PIL import Image

    if not person or "/" in person or person.startswith("."):
        raise ValueError(f"--person must be a plain folder name. Received: {person!r}")
    if every < 1:
        raise ValueError(f"--every must be >= 1. Received: {every}")
    video = Path(video)
    if not video.exists():
        raise FileNotFoundError(f"Video {video} not found")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot read the video {video}")
    folder = Path(output) / person
    folder.mkdir(parents=True, exist_ok=True)
    cascade = haar_cascade()
    crops: list[Crop] = []
    index = -1
    try:
        while max_faces is None or len(crops) < max_faces:
            ok, frame = capture.read()
            if not ok:
                break
            index += 1
            if index % every:
                continue
            box, method = detect_face(cascade, frame), "haar"
            if box is None:
                if not fallback:
                    continue
                box, method = centre_box(frame.shape[1], frame.shape[0]), "centre"
            path = folder / f"{person}_{index:05d}.png"
            Image.fromarray(crop_face(frame, box)).save(path)
            crops.append(Crop(frame=index, method=method, box=box, path=path))
    finally:
        capture.release()
    with open(folder / "crops.csv", "a", newline="") as f:
        writer = csv.writer(f)
        if f.tell() == 0:
            writer.writerow(["file", "video", "frame", "method", "x", "y", "w", "h"])
        for c in crops:
            writer.writerow([c.path.name, str(video), c.frame, c.method, *c.box])
    counts = {m: sum(c.method == m for c in crops) for m in ("haar", "centre")}
    log.info("%s: %d faces from %s (%d detected, %d centre box) -> %s", person, len(crops), video,
                counts["haar"], counts["centre"], folder)  # fmt: skip
    return crops
