"""How faithful a model's heatmaps are: one score per candidate layer and method, and the defaults they choose.

Metrics (all model-agnostic: they only call the model), on the model's top-1 class of each sample:

- **deletion / insertion** (RISE, Petsiuk et al. 2018): the pixels are ranked by the map, hottest first;
  deleting them (setting them to 0) in ``steps`` equal slices must drop the class probability fast (low
  deletion AUC), inserting them into a blurred copy of the image must raise it fast (high insertion AUC).
  AUC: trapezoids over the fraction of pixels 0..1, so both are in [0, 1].
- **randomisation check** (Adebayo et al. 2018): the weighted layers from the candidate layer to the top are
  re-initialised (cascading randomisation down to the layer; the served weights are never touched: a clone
  is changed), in ``Bounds.randomisation_seeds`` draws; the maps of the same samples must change: the mean
  Spearman rank correlation with the trained model's maps must stay below ``RANDOMISATION_THRESHOLD``. A map
  that ignores the weights (an edge detector on the input) fails it.
- **pointing game** where a ground-truth mask is cheap (digits: ink is ``pixel > INK_THRESHOLD``): the map's
  hottest pixel lies within ``POINTING_TOLERANCE`` pixels of the mask; also the mean heat on the mask over the
  mean heat off it (``heat_ratio``).

``score = insertion - deletion (+ pointing game where a mask exists)``; scores compare the layers and methods
of one model only. The default (layer, method) is the best-scoring one that passes the randomisation check.

Candidate layers: the model's convolution layers (and the variant's recorded Grad-CAM layer), from the last
back, the last one of each resolution, while the map is at least ``MIN_SIDE`` pixels on its shorter side,
at most ``Bounds.max_layers`` of them.

Entry points: :func:`score_model` (an ExplainableModel and samples) and :func:`score_version` (a version
folder with its model.keras and its metadata: what export calls, for variants and ``--keras`` models alike).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cnnserve.explainer import cams
from cnnserve.explainer.graph import ExplainableModel

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RANDOMISATION_THRESHOLD = 0.5
RANDOMISATION_SEED = (
    20181203  # never a training seed (0, 1, 42, ...): a clone seeded like training would get its initial weights
)
MIN_SIDE = 3
INK_THRESHOLD = 127
POINTING_TOLERANCE = 2
CHUNK = 256  # images per forward pass
DIGIT_DATASETS = ("mnist", "digits")  # ink on a black background: the pointing game's mask is cheap


@dataclass(frozen=True)
class Bounds:
    """What scoring may cost: samples, methods, layers, curve steps, randomisation samples."""

    samples: int = 64
    steps: int = 16
    max_layers: int = 3
    methods: tuple[str, ...] = cams.METHODS
    randomisation_samples: int = 16
    randomisation_seeds: int = 3
    score_cam_channels: int = cams.DEFAULT_SCORE_CAM_CHANNELS
    seed: int = 0


@dataclass
class Score:
    layer: str
    method: str
    deletion_auc: float
    insertion_auc: float
    randomisation_correlation: float
    passes_randomisation: bool
    score: float
    pointing_game: float | None = None
    heat_ratio: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Report:
    scores: list[Score]
    samples: int
    bounds: Bounds
    mask: str = ""
    seconds: float = 0.0
    source: str = ""
    default: Score | None = field(default=None)

    def as_dict(self) -> dict:
        out = {
            "schema_version": SCHEMA_VERSION,
            "samples": self.samples,
            "source": self.source,
            "mask": self.mask,
            "bounds": {**asdict(self.bounds), "methods": list(self.bounds.methods)},
            "randomisation_threshold": RANDOMISATION_THRESHOLD,
            "seconds": round(self.seconds, 2),
            "scores": [s.as_dict() for s in self.scores],
            "default": None,
        }
        if self.default is not None:
            out["default"] = {"layer": self.default.layer, "method": self.default.method, "score": self.default.score}
        return out


# ---- candidates --------------------------------------------------------------------------------------------


def candidate_layers(model: ExplainableModel, recorded: Sequence[str] = (), max_layers: int = 3) -> list[str]:
    """Convolution layers (or ``recorded`` ones), from the last back: the last of each resolution, at least
    ``MIN_SIDE`` pixels a side, at most ``max_layers``."""
    chosen: list[str] = []
    sizes: set[tuple[int, int]] = set()
    for spec in reversed(model.spatial_layers):
        if "Conv" not in spec.class_name and spec.name not in recorded:
            continue
        size = (int(spec.output_shape[1]), int(spec.output_shape[2]))
        if min(size) < MIN_SIDE or size in sizes:
            continue
        sizes.add(size)
        chosen.append(spec.name)
        if len(chosen) == max_layers:
            break
    return chosen


# ---- metrics -----------------------------------------------------------------------------------------------


def blurred(x: np.ndarray) -> np.ndarray:
    """A strongly blurred copy (Gaussian, sigma = side / 8), RISE's insertion start: the image's colours
    without its shapes."""
    n, h, w, c = x.shape
    out = x.astype(np.float32)
    for axis, side in ((1, h), (2, w)):
        sigma = max(side / 8.0, 1.0)
        radius = int(3 * sigma)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if side > radius else "edge")
        out = np.apply_along_axis(lambda v, t=taps: np.convolve(v, t, mode="valid"), axis, padded)
    return out.astype(np.float32)


def _ranks(maps: np.ndarray, seed: int) -> np.ndarray:
    """[N, P] rank of each pixel, 0 = hottest; ties in random order."""
    n, p = maps.shape
    tie = np.random.default_rng(seed).random(maps.shape)
    order = np.stack([np.lexsort((tie[i], -maps[i])) for i in range(n)])
    ranks = np.empty_like(order)
    rows = np.arange(n)[:, None]
    ranks[rows, order] = np.arange(p)[None, :]
    return ranks


def _probabilities(model: ExplainableModel, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    fn = model.probabilities()
    return np.concatenate([fn(tf.constant(images[i : i + CHUNK])).numpy() for i in range(0, len(images), CHUNK)])


def deletion_insertion(
    model: ExplainableModel, x: np.ndarray, maps: np.ndarray, target: np.ndarray, steps: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image deletion and insertion AUC of ``maps`` [N, H, W] for pixels ``x`` [N, H, W, C]."""
    n, h, w, c = x.shape
    ranks = _ranks(maps.reshape(n, -1), seed)
    counts = np.round(np.linspace(0.0, 1.0, steps + 1) * h * w).astype(int)
    x = x.astype(np.float32)
    start = blurred(x)
    rows = np.arange(n)
    curves = {}
    for kind in ("deletion", "insertion"):
        stack = np.empty((n, steps + 1, h, w, c), dtype=np.float32)
        for k, count in enumerate(counts):
            mask = (ranks < count).reshape(n, h, w, 1)
            stack[:, k] = np.where(mask, 0.0, x) if kind == "deletion" else np.where(mask, x, start)
        p = _probabilities(model, stack.reshape(-1, h, w, c)).reshape(n, steps + 1, -1)
        curves[kind] = p[rows, :, target]  # [N, steps + 1]
    fractions = counts / (h * w)
    return tuple(np.trapezoid(curves[k], fractions, axis=1) for k in ("deletion", "insertion"))


def ink_masks(x: np.ndarray, threshold: int = INK_THRESHOLD) -> np.ndarray:
    """[N, H, W] bool: pixels brighter than ``threshold`` in any channel (digits' ink)."""
    return x.max(axis=-1) > threshold


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    out = masks.copy()
    n, h, w = masks.shape
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)))
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            out |= padded[:, radius + dr : radius + dr + h, radius + dc : radius + dc + w]
    return out


def pointing_game(maps: np.ndarray, masks: np.ndarray, tolerance: int = POINTING_TOLERANCE) -> np.ndarray:
    """Per image: 1.0 when the map's hottest pixel lies within ``tolerance`` pixels of the mask; a flat map
    (all zero) points nowhere."""
    n = len(maps)
    flat = maps.reshape(n, -1)
    peak = flat.argmax(axis=1)
    near = _dilate(masks, tolerance).reshape(n, -1)
    return (near[np.arange(n), peak] & (flat.max(axis=1) > 0)).astype(np.float64)


def heat_ratio(maps: np.ndarray, masks: np.ndarray) -> float:
    """Mean heat on the mask over mean heat off it, over all images (1.0 is chance)."""
    on, off = maps[masks].mean() if masks.any() else 0.0, maps[~masks].mean() if (~masks).any() else 0.0
    return float(on / off) if off > 0 else float("inf") if on > 0 else 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation with average ranks for ties; 0 when either map is constant (no structure)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        return (np.bincount(inverse, r) / counts)[inverse]

    ra, rb = ranks(a.ravel()), ranks(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- randomisation -----------------------------------------------------------------------------------------


def _flat_layers(model) -> list:
    """The model's layers with nested models' layers in place (the order ExplainableModel names them in)."""
    import keras

    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def randomised_from(keras_model, layer: str, seed: int = 0, inclusive: bool = True):
    """A clone of ``keras_model`` whose weighted layers from ``layer`` (``inclusive``, else after it) to the top are
    re-initialised (fresh initialisers, seeded with ``RANDOMISATION_SEED + seed``), the others holding the served
    weights: Adebayo's cascading randomisation down to the layer. The served model is not changed."""
    import keras

    keras.utils.set_random_seed(RANDOMISATION_SEED + seed)
    fresh = keras.models.clone_model(keras_model)  # freshly initialised weights throughout
    trained_layers, fresh_layers = _flat_layers(keras_model), _flat_layers(fresh)
    names = [item.name for item in trained_layers]
    if layer not in names:
        raise ValueError(f"no layer {layer!r} in model {keras_model.name!r}")
    above = names.index(layer)
    for i, (source, target) in enumerate(zip(trained_layers, fresh_layers, strict=True)):
        if (i < above or (i == above and not inclusive)) and source.weights:
            target.set_weights([w.numpy() for w in source.weights])
    return fresh


MapFunction = Callable[[ExplainableModel, np.ndarray], np.ndarray]


def randomisation_correlation(
    keras_model,
    layer: str,
    explain: MapFunction,
    x: np.ndarray,
    seeds: int = 3,
    trained: np.ndarray | None = None,
    randomised: Sequence[ExplainableModel] = (),
) -> float:
    """Mean Spearman correlation between ``explain``'s maps of the served model (``trained``, if already
    computed) and those of ``seeds`` models with the weighted layers from ``layer`` up re-initialised
    (``randomised``, if already built), over images and draws. Faithful maps give values near 0; a map that
    ignores the weights gives 1. One draw is noisy (one random head may happen to favour the same features),
    hence several."""
    if trained is None:
        trained = explain(ExplainableModel(keras_model), x)
    if not randomised:
        randomised = [ExplainableModel(randomised_from(keras_model, layer, seed)) for seed in range(seeds)]
    values = [spearman(a, b) for model in randomised for a, b in zip(trained, explain(model, x), strict=True)]
    return float(np.mean(values))


# ---- scoring -----------------------------------------------------------------------------------------------


def _method_maps(layer: str, method: str, channels: int) -> MapFunction:
    return lambda em, x: cams.heatmaps(em, x, layer, method, None, channels).heatmaps


def score_model(
    model: ExplainableModel,
    x: np.ndarray,
    masks: np.ndarray | None = None,
    layers: Sequence[str] | None = None,
    bounds: Bounds = Bounds(),
    recorded: Sequence[str] = (),
    check: Callable[[], None] | None = None,
) -> Report:
    """Score every (candidate layer, method) on samples ``x`` uint8 [N, H, W, C] (the first ``bounds.samples``),
    with the pointing game where ``masks`` [N, H, W] are given. ``layers`` default: :func:`candidate_layers`.
    ``check`` runs before each pair (the sidecar's deadline and cancellation check: it raises to stop)."""
    started = time.monotonic()
    x = np.asarray(x)[: bounds.samples]
    masks = None if masks is None else np.asarray(masks, dtype=bool)[: bounds.samples]
    layers = list(layers) if layers else candidate_layers(model, recorded, bounds.max_layers)
    x_random = x[: bounds.randomisation_samples]
    scores = []
    for layer in layers:
        randomised = [
            ExplainableModel(randomised_from(model.model, layer, bounds.seed + i))
            for i in range(bounds.randomisation_seeds)
        ]
        for method in bounds.methods:
            if check is not None:
                check()
            t0 = time.monotonic()
            result = cams.heatmaps(model, x, layer, method, None, bounds.score_cam_channels)
            deletion, insertion = deletion_insertion(
                model, x, result.heatmaps, result.target, bounds.steps, bounds.seed
            )
            explain = _method_maps(layer, method, bounds.score_cam_channels)
            trained = result.heatmaps[: len(x_random)]
            correlation = randomisation_correlation(
                model.model, layer, explain, x_random, trained=trained, randomised=randomised
            )
            entry = Score(
                layer=layer,
                method=method,
                deletion_auc=round(float(deletion.mean()), 4),
                insertion_auc=round(float(insertion.mean()), 4),
                randomisation_correlation=round(correlation, 4),
                passes_randomisation=bool(correlation < RANDOMISATION_THRESHOLD),
                score=0.0,
            )
            total = entry.insertion_auc - entry.deletion_auc
            if masks is not None:
                entry.pointing_game = round(float(pointing_game(result.heatmaps, masks).mean()), 4)
                entry.heat_ratio = round(heat_ratio(result.heatmaps, masks), 3)
                total += entry.pointing_game
            entry.score = round(total, 4)
            entry.seconds = round(time.monotonic() - t0, 2)
            scores.append(entry)
            log.info("faithfulness %s/%s: %s", layer, method, entry.as_dict())
    report = Report(scores, len(x), bounds, mask="" if masks is None else "given", seconds=time.monotonic() - started)
    report.default = choose_default(scores)
    return report


def choose_default(scores: Sequence[Score]) -> Score | None:
    """The best-scoring (layer, method) that passes the randomisation check; None when none passes."""
    passing = [s for s in scores if s.passes_randomisation]
    return max(passing, key=lambda s: s.score) if passing else None


# ---- a version folder --------------------------------------------------------------------------------------


def recorded_layers(metadata: dict) -> list[str]:
    """The layers metadata.json names as Grad-CAM layers (``layers.cam``, ``layers.last_conv``)."""
    recorded = metadata.get("layers") or {}
    return [name for name in (recorded.get("cam"), recorded.get("last_conv")) if isinstance(name, str) and name]


def default_masks(metadata: dict, x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Ink masks for digits (metadata's ``dataset``, or its variant's), else none."""
    dataset = metadata.get("dataset", "")
    if not dataset and metadata.get("variant"):
        try:
            from cnnserve.training.registry import get_variant

            dataset = get_variant(metadata["variant"]).dataset
        except (ImportError, KeyError):
            dataset = ""
    if dataset in DIGIT_DATASETS:
        return ink_masks(x), f"ink: pixel > {INK_THRESHOLD}, {POINTING_TOLERANCE}-pixel tolerance"
    return None, ""


def score_version(
    vdir: str | Path,
    metadata: dict,
    x: np.ndarray,
    masks: np.ndarray | None = None,
    mask_description: str = "",
    bounds: Bounds = Bounds(),
    source: str = "",
    keras_model=None,
) -> dict:
    """Score the version in ``vdir`` (its model.keras, or ``keras_model``) on ``x``; returns the
    ``faithfulness`` entry of metadata.json (``metadata`` is not changed). ``masks`` None: ink masks when the
    metadata says the model reads digits."""
    if keras_model is None:
        import keras

        keras_model = keras.saving.load_model(Path(vdir) / "model.keras", compile=False)
    model = ExplainableModel(keras_model)
    if masks is None:
        masks, mask_description = default_masks(metadata, x)
    report = score_model(model, x, masks, bounds=bounds, recorded=recorded_layers(metadata))
    report.mask = mask_description if masks is not None else ""
    report.source = source
    return report.as_dict()


def write_scores(vdir: str | Path, faithfulness: dict) -> dict:
    """Put ``faithfulness`` into ``vdir``/metadata.json; returns the new metadata."""
    path = Path(vdir) / "metadata.json"
    meta = json.loads(path.read_text())
    meta["faithfulness"] = faithfulness
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta
