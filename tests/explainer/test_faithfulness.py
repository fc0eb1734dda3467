"""Faithfulness scores (explainer/faithfulness.py): the metrics, the candidates, the defaults they choose.

- a planted-object model (the class is one small object at a random place): the chosen default points at it;
- lenet5 trained and exported as `make demo` does: the chosen default points at ink far better than conv2
  Grad-CAM, counted over held-out digits the scoring never saw, and the sidecar serves that default;
- the randomisation check fails for a map that ignores the weights (an edge detector on the input).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_explainer_maps import OBJECT, SIZE, _hit_rate, planted, planted_model, train_planted

from cnnserve.explainer import cams
from cnnserve.explainer import faithfulness as F
from cnnserve.explainer.graph import ExplainableModel
from support import DIGITS


def test_pointing_game_and_heat_ratio():
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[:, 4:6, 4:6] = True
    maps = np.zeros((3, 10, 10), dtype=np.float32)
    maps[0, 5, 5] = 1.0  # on the mask
    maps[1, 5, 7] = 1.0  # 2 pixels off: within the tolerance
    maps[2, 0, 0] = 1.0  # far off
    np.testing.assert_array_equal(F.pointing_game(maps, masks), [1.0, 1.0, 0.0])
    assert F.pointing_game(np.zeros((1, 10, 10)), masks[:1])[0] == 0.0  # a flat map points nowhere
    on_mask = np.where(masks, 1.0, 0.5)
    assert F.heat_ratio(on_mask, masks) == pytest.approx(2.0)
    assert F.heat_ratio(np.ones((3, 10, 10)), masks) == pytest.approx(1.0)


def test_spearman_and_ranks():
    a = np.arange(16, dtype=float).reshape(4, 4)
    assert F.spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert F.spearman(a, -a) == pytest.approx(-1.0)
    assert F.spearman(a, np.zeros_like(a)) == 0.0
    ranks = F._ranks(np.array([[0.1, 0.9, 0.5]]), seed=0)
    np.testing.assert_array_equal(ranks, [[2, 0, 1]])


def test_candidate_layers():
    from cnnserve.training.registry import get_variant

    lenet = ExplainableModel(get_variant("lenet5").make_model())
    assert F.candidate_layers(lenet) == ["conv2", "conv1"]  # 8x8, then 24x24
    assert F.candidate_layers(lenet, max_layers=1) == ["conv2"]
    # conv2 and conv3 share a resolution: the last of them stands for it.
    assert F.candidate_layers(ExplainableModel(planted_model())) == ["conv3", "conv1"]
    # Too coarse a map (digits_bn's conv2 is 4x4, pool2 2x2) is kept; a 2x2 one is not a candidate.
    digits_bn = ExplainableModel(get_variant("digits_bn").make_model())
    assert F.candidate_layers(digits_bn) == ["conv2", "conv1"]
    assert F.candidate_layers(digits_bn, recorded=["pool2"]) == ["conv2", "conv1"]


def test_choose_default_takes_the_best_that_passes():
    def entry(layer, method, score, passes):
        return F.Score(layer, method, 0.2, 0.8, 0.9 if not passes else 0.1, passes, score)

    scores = [entry("a", "gradcam", 0.5, True), entry("a", "score_cam", 0.9, False), entry("b", "gradcam", 0.7, True)]
    chosen = F.choose_default(scores)
    assert (chosen.layer, chosen.method) == ("b", "gradcam")
    assert F.choose_default([entry("a", "gradcam", 0.5, False)]) is None


def test_blurred_keeps_the_mean_and_removes_the_shape():
    x = np.zeros((1, 28, 28, 1), dtype=np.uint8)
    x[0, 10:18, 13:15] = 255
    b = F.blurred(x)
    assert b.shape == x.shape and b.dtype == np.float32
    assert b.max() < 0.5 * 255 and b.mean() == pytest.approx(x.mean(), rel=0.1)


# ---- real models -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_trained():
    model = train_planted(seed=0)
    x, y, where = planted(260, seed=11)
    accuracy = (model.predict(x, verbose=0).argmax(axis=1) == y).mean()
    assert accuracy >= 0.98, f"the planted-object model did not learn the task (accuracy {accuracy:.3f})"
    return model, (x, y, where)


@pytest.mark.slow
def test_planted_object_default_points_at_the_object(planted_trained):
    model, (x, _, where) = planted_trained
    em = ExplainableModel(model)
    # Model-agnostic metrics only (no mask): deletion, insertion and the randomisation check.
    report = F.score_model(em, x[:48], bounds=F.Bounds(samples=48, steps=16))
    assert {s.layer for s in report.scores} == {"conv3", "conv1"} and len(report.scores) == 8
    chosen = report.default
    assert chosen is not None and chosen.passes_randomisation
    assert chosen.score == max(s.score for s in report.scores if s.passes_randomisation)
    # On images the scoring never saw, the default's peak is on the object.
    maps = cams.heatmaps(em, x[60:], chosen.layer, chosen.method).heatmaps
    centre = np.zeros_like(maps)
    centre[:, SIZE // 2, SIZE // 2] = 1.0
    rate, baseline = _hit_rate(maps, where[60:]), _hit_rate(centre, where[60:])
    print({(s.layer, s.method): (s.score, s.randomisation_correlation) for s in report.scores}, chosen, rate)
    assert rate >= 0.9 and baseline <= 0.25, (chosen, rate, baseline)
    # With the object as the mask the pointing game agrees.
    boxes = np.zeros(x.shape[:3], dtype=bool)
    for i, (r, c) in enumerate(where):
        boxes[i, r : r + OBJECT, c : c + OBJECT] = True
    masked = F.score_model(em, x[:48], boxes[:48], layers=[chosen.layer], bounds=F.Bounds(samples=48))
    assert next(s for s in masked.scores if s.method == chosen.method).pointing_game >= 0.9


@pytest.mark.slow
def test_randomisation_check_fails_for_a_map_that_ignores_the_weights(planted_trained):
    model, (x, _, _) = planted_trained
    x = x[:16]

    def edges(em, images):  # gradient magnitude of the input: the same whatever the weights
        f = images[..., 0].astype(np.float32)
        gy, gx = np.gradient(f, axis=(1, 2))
        return np.hypot(gx, gy)

    def gradcam(em, images):
        return cams.heatmaps(em, images, "conv3", "gradcam").heatmaps

    assert F.randomisation_correlation(model, "conv3", edges, x) > 0.99
    assert F.randomisation_correlation(model, "conv3", gradcam, x) < F.RANDOMISATION_THRESHOLD
    # The clone changed; the served model did not.
    before = [w.numpy().copy() for w in model.weights]
    randomised = F.randomised_from(model, "conv2")
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))
    kept = {"conv1"}  # conv2 and everything above it re-initialised
    for layer in randomised.layers:
        if layer.weights:
            same = np.array_equal(layer.weights[0].numpy(), model.get_layer(layer.name).weights[0].numpy())
            assert same == (layer.name in kept), layer.name


@pytest.fixture(scope="module")
def lenet5_exported(tmp_path_factory):
    """lenet5 trained and exported as `make demo` does (the variant's own epochs on the bundled digits)."""
    from cnnserve.export.exporter import export_variant
    from cnnserve.training.train import train_variant

    work = tmp_path_factory.mktemp("lenet5")
    train_variant("lenet5", data_path=DIGITS, output_dir=work / "artifacts", verbose=0)
    return export_variant("lenet5", artifacts=work / "artifacts", repository=work / "models", data_path=DIGITS)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # lenet5's 40 epochs: about 4 minutes on 2 quiet cores, 9 on busy ones
def test_lenet5_default_points_at_ink_far_better_than_conv2_gradcam(lenet5_exported):
    from cnnserve.explainer.models import ModelTable
    from cnnserve.training.data import load_mnist, split_dataset

    vdir = lenet5_exported
    scored = json.loads((vdir / "metadata.json").read_text())["faithfulness"]
    samples = scored["samples"]
    assert samples == 64 and scored["mask"].startswith("ink") and len(scored["scores"]) == 8
    default = scored["default"]
    assert default is not None and (default["layer"], default["method"]) != ("conv2", "gradcam")
    entry = next(s for s in scored["scores"] if (s["layer"], s["method"]) == (default["layer"], default["method"]))
    assert entry["passes_randomisation"]

    # Held-out digits the scoring did not use (it took the first 64 parity samples, all held-out).
    data = load_mnist(DIGITS)
    held = split_dataset(data).heldout[samples : samples + 200]
    x = data.x[held]
    x = x if x.ndim == 4 else x[..., None]  # NHWC uint8, as served
    ink = F.ink_masks(x)
    table = ModelTable(vdir.parent.parent)
    table.load_all()
    served = table.get("lenet5")
    assert (served.default_layer, served.default_method) == (default["layer"], default["method"])
    hits = {}
    for layer, method in ((served.default_layer, served.default_method), ("conv2", "gradcam")):
        maps = cams.heatmaps(served.model, x, layer, method).heatmaps
        hits[layer, method] = int(F.pointing_game(maps, ink).sum())
    print(hits, scored["scores"])
    chosen, old = hits[served.default_layer, served.default_method], hits["conv2", "gradcam"]
    assert chosen >= 0.9 * len(x) and chosen - old >= 0.25 * len(x), hits
