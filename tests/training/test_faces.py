"""face_cnn's data step end to end: a video the test writes itself -> `cnnserve faces extract` -> folder
tree -> training with augmentation -> export -> served classification.

The videos are drawn with OpenCV: a cartoon face (skin ellipse, hair, eyes, brows, nose, mouth) that
OpenCV's Haar cascade detects, and a face-less noise video that exercises the documented centre-box
fallback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from support import ServerThread, png_bytes

cv2 = pytest.importorskip("cv2")

from cnnserve.training import faces  # noqa: E402

FRAME_W, FRAME_H = 320, 240


def drawn_face(cx: int, cy: int, tone=(150, 180, 220), scale: float = 1.3) -> np.ndarray:
    """A BGR frame with a frontal cartoon face centred at (cx, cy)."""
    img = np.full((FRAME_H, FRAME_W, 3), 90, np.uint8)
    s = scale

    def p(dx, dy):
        return cx + int(dx * s), cy + int(dy * s)

    cv2.ellipse(img, (cx, cy), (int(48 * s), int(62 * s)), 0, 0, 360, tone, -1)
    cv2.ellipse(img, p(0, -45), (int(50 * s), int(25 * s)), 0, 180, 360, (30, 30, 40), -1)
    for dx in (-18, 18):
        cv2.ellipse(img, p(dx, -12), (int(10 * s), int(5 * s)), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, p(dx, -12), int(4 * s), (20, 20, 20), -1)
        cv2.line(img, p(dx - 11, -24), p(dx + 11, -24), (30, 30, 40), max(1, int(3 * s)))
    cv2.line(img, p(0, -5), p(-5, 12), (110, 130, 170), max(1, int(3 * s)))
    cv2.ellipse(img, p(0, 28), (int(16 * s), int(6 * s)), 0, 0, 180, (40, 40, 120), max(1, int(4 * s)))
    return cv2.GaussianBlur(img, (5, 5), 0)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (FRAME_W, FRAME_H))
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def face_video(path: Path, tone, n: int = 24) -> Path:
    # The face drifts a little, so crops differ from frame to frame.
    return write_video(path, [drawn_face(150 + (i % 6) * 4, 118 + (i % 4) * 2, tone) for i in range(n)])


def noise_video(path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    return write_video(path, [rng.integers(0, 255, (FRAME_H, FRAME_W, 3), dtype=np.uint8) for _ in range(n)])


def _rows(folder: Path) -> list[dict]:
    with open(folder / "crops.csv") as f:
        return list(csv.DictReader(f))


def test_centre_box_is_5_by_7_and_inside_the_frame():
    for w, h in ((320, 240), (240, 320), (1920, 1080), (60, 400)):
        x, y, bw, bh = faces.centre_box(w, h)
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
        assert abs(bw / bh - 50 / 70) < 0.05
        assert abs((x + bw / 2) - w / 2) <= 1 and abs((y + bh / 2) - h / 2) <= 1


def test_haar_cascade_finds_the_drawn_face_and_not_noise():
    cascade = faces.haar_cascade()
    box = faces.detect_face(cascade, drawn_face(160, 120))
    assert box is not None
    x, y, w, h = box
    assert x <= 160 <= x + w and y <= 120 <= y + h  # the face centre lies in the crop
    noise = np.random.default_rng(1).integers(0, 255, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
    assert faces.detect_face(cascade, noise) is None


def test_extract_detected_faces_and_the_centre_fallback(tmp_path):
    out = tmp_path / "faces"
    crops = faces.extract_faces(face_video(tmp_path / "a.avi", (150, 180, 220)), "alice", out, every=2)
    assert len(crops) == 12 and all(c.method == "haar" for c in crops)
    files = sorted((out / "alice").glob("*.png"))
    assert len(files) == 12
    from PIL import Image

    with Image.open(files[0]) as img:
        assert img.size == (50, 70) and img.mode == "RGB"
    assert {r["method"] for r in _rows(out / "alice")} == {"haar"}

    crops = faces.extract_faces(noise_video(tmp_path / "n.avi"), "nobody", out, every=3)
    assert len(crops) == 4 and all(c.method == "centre" for c in crops)
    assert all(c.box == faces.centre_box(FRAME_W, FRAME_H) for c in crops)
    assert faces.extract_faces(tmp_path / "n.avi", "skipped", out, fallback=False) == []


def test_extract_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        faces.extract_faces(tmp_path / "missing.avi", "a", tmp_path)
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(ValueError):
        faces.extract_faces(tmp_path / "bad.avi", "a", tmp_path)
    with pytest.raises(ValueError):
        faces.extract_faces(tmp_path / "bad.avi", "../a", tmp_path)


def test_faces_extract_cli(tmp_path, capsys):
    from cnnserve.cli import main

    video = face_video(tmp_path / "b.avi", (120, 150, 200), n=6)
    assert (
        main(["faces", "extract", str(video), "--person", "bob", "--output", str(tmp_path / "f"), "--every", "3"]) == 0
    )
    assert "bob: 2 faces (2 detected, 0 centre box)" in capsys.readouterr().out
    assert len(list((tmp_path / "f" / "bob").glob("*.png"))) == 2


@pytest.mark.slow
def test_video_to_served_face_classifier(tmp_path):
    from cnnserve.client import CnnserveClient
    from cnnserve.export.exporter import export_variant
    from cnnserve.training.datasets import load_faces
    from cnnserve.training.train import train_variant

    out = tmp_path / "faces"
    faces.extract_faces(face_video(tmp_path / "a.avi", (150, 180, 220)), "alice", out, every=1)
    faces.extract_faces(face_video(tmp_path / "c.avi", (60, 90, 200)), "carol", out, every=1)
    data = load_faces(out)
    assert data.labels == ("alice", "carol") and data.x.shape == (48, 70, 50, 3)

    art = train_variant("face_cnn", data_path=out, epochs=2, output_dir=tmp_path / "art", verbose=0)
    meta = json.loads((art / "train_metadata.json").read_text())
    assert meta["labels"] == ["alice", "carol"] and meta["output"]["shape"] == [-1, 2]
    assert meta["split"]["heldout_count"] == 10 and meta["training"]["train_count"] == 38
    assert meta["preprocessing"]["augmentation_training_only"]["horizontal_flip"] is True

    vdir = export_variant("face_cnn", artifacts=tmp_path / "art", repository=tmp_path / "models")
    served = json.loads((vdir / "metadata.json").read_text())
    assert served["parity"]["top1_agreement"] == 1.0 and served["parity"]["max_abs_diff"] <= 1e-4
    assert served["parity"]["composition"] == {"heldout": 10, "train": 38, "generated": 208}
    assert (tmp_path / "models" / "face_cnn" / "labels.txt").read_text().split() == ["alice", "carol"]

    server = ServerThread(tmp_path / "models").start()
    try:
        with CnnserveClient(server.address) as client:
            response = client.classify("face_cnn", [png_bytes(data.x[0]), png_bytes(data.x[-1])], top_k=2)
    finally:
        server.stop()
    for result in response.results:
        assert sorted(p.label for p in result.predictions) == ["alice", "carol"]
        assert abs(sum(p.score for p in result.predictions) - 1.0) < 1e-4
