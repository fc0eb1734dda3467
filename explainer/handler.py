"""The explainer's handler: plain values in, plain values out, no gRPC.

Requests are validated and images decoded on the event loop's side; the TensorFlow work runs on one
worker thread (TensorFlow parallelises each call itself), so health checks and validation errors never
wait behind a long computation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from cnnserve.explainer import cams, faithfulness, patterns
from cnnserve.explainer.graph import LayerSpec
from cnnserve.explainer.models import ExplainableVersion, ModelTable
from cnnserve.explainer.render import DEFAULT_ALPHA, channel_tiles, grid, grid_columns, overlay_png
from cnnserve.explainer.settings import ExplainerSettings
from cnnserve.explainer.work import WorkQueue
from cnnserve.service.errors import Cancelled, DeadlineExceeded, FailedPrecondition, InvalidArgument
from cnnserve.service.imaging import decode_image, encode_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawPixels:
    """A raw uint8 image [height, width, channels] as bytes."""

    data: bytes
    height: int
    width: int
    channels: int


ImageInput = bytes | RawPixels  # encoded PNG/JPEG, or raw pixels


@dataclass
class HeatmapItem:
    heatmap: np.ndarray  # float32 [H, W]
    predicted_class: int
    predicted_label: str
    predicted_score: float
    target_class: int
    target_score: float
    overlay_png: bytes


@dataclass
class HeatmapOutput:
    model_name: str
    model_version: str
    layer: str
    method: str
    pre_softmax: bool
    items: list[HeatmapItem]
    faithfulness: dict | None = None  # the (layer, method)'s score from metadata.json, if scored


@dataclass
class ActivationItem:
    activations: np.ndarray | None  # float32 [h, w, len(channels)]
    grid_png: bytes
    dead_channels: list[int]


@dataclass
class ActivationsOutput:
    model_name: str
    model_version: str
    layer: str
    channels: list[int]
    grid_columns: int
    items: list[ActivationItem]


@dataclass
class PatternsOutput:
    model_name: str
    model_version: str
    layer: str
    patterns: list[tuple[int, bytes, float, bool]]  # (filter, png, activation, cached)


@dataclass
class LayersOutput:
    model_name: str
    model_version: str
    layers: list[LayerSpec]
    default_heatmap_layer: str
    input_shape: tuple[int, int, int]
    labels: tuple[str, ...] = field(default_factory=tuple)
    default_heatmap_method: str = ""
    faithfulness: list[dict] = field(default_factory=list)  # metadata.json's faithfulness scores
    faithfulness_source: str = ""
    faithfulness_samples: int = 0


@dataclass
class FaithfulnessOutput:
    model_name: str
    model_version: str
    scores: list[dict]
    best_layer: str
    best_method: str
    default_heatmap_layer: str
    default_heatmap_method: str
    samples: int
    seconds: float


MAX_CURVE_STEPS = 64


def _monotonic(deadline: float | None) -> float | None:
    """A deadline in loop time as time.monotonic() time, for checks on the worker thread."""
    if deadline is None:
        return None
    return time.monotonic() + (deadline - asyncio.get_running_loop().time())


class ExplainerHandler:
    def __init__(self, settings: ExplainerSettings, table: ModelTable | None = None) -> None:
        self.settings = settings
        self.table = table or ModelTable(settings.model_repository)
        self.cache = patterns.PatternCache(settings.pattern_cache_size)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explainer")
        self.queue = WorkQueue(settings.max_queued_images)

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self.table.load_all)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    async def _run(self, method: str, images: int, fn, deadline: float | None):
        """Admit ``images`` of work (RESOURCE_EXHAUSTED past the queue's bound) and run ``fn(job)`` on the worker.

        Dropped before compute when its deadline (loop time) has passed or its caller has left; ``fn`` calls
        ``job.check()`` at its batch boundaries, which stops it once either happens while it runs.
        """
        job = self.queue.admit(method, images, _monotonic(deadline))

        def guarded():
            try:
                try:
                    job.check()
                except Cancelled:
                    self.queue.dropped_before_compute(job, "cancelled")
                    raise
                except DeadlineExceeded:
                    self.queue.dropped_before_compute(job, "deadline")
                    raise DeadlineExceeded(
                        "the deadline passed while the request waited for the explainer's worker"
                    ) from None
                started = time.perf_counter()
                self.queue.computing_started()
                try:
                    return fn(job)
                except Cancelled:
                    self.queue.stopped_during_compute("cancelled")
                    raise
                except DeadlineExceeded:
                    self.queue.stopped_during_compute("deadline")
                    raise
                finally:
                    self.queue.computed(method, time.perf_counter() - started)
            finally:
                self.queue.release(job)

        future = self._worker.submit(guarded)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # the caller left: drop it if it has not started, else stop it
            job.abandoned.set()
            if future.cancel():
                self.queue.dropped_before_compute(job, "cancelled")
                self.queue.release(job)
            raise

    # ---- validation helpers ---------------------------------------------------------------------------

    async def _entry(self, model: str, version: str) -> ExplainableVersion:
        """The model version; off the event loop, since a model exported after start is loaded on demand."""
        return await asyncio.to_thread(self.table.get, model, version)

    def _images(self, entry: ExplainableVersion, images: list[ImageInput]) -> np.ndarray:
        if not images:
            raise InvalidArgument("no images in the request")
        if len(images) > self.settings.max_images:
            raise InvalidArgument(f"{len(images)} images exceed the explainer's limit of {self.settings.max_images}")
        h, w, c = entry.model.input_shape
        batch = []
        for i, image in enumerate(images):
            if isinstance(image, RawPixels):
                got = (image.height, image.width, image.channels)
                if got != (h, w, c):
                    raise InvalidArgument(
                        f"image {i}: raw image is {list(got)}; model {entry.name!r} takes [{h}, {w}, {c}]"
                    )
                if len(image.data) != h * w * c:
                    raise InvalidArgument(f"image {i}: {len(image.data)} bytes of raw pixels; expected {h * w * c}")
                batch.append(np.frombuffer(image.data, dtype=np.uint8).reshape(h, w, c))
            else:
                if entry.preprocessing is None:
                    raise FailedPrecondition(
                        f"model {entry.name!r} has no metadata.json preprocessing; send raw images of [{h}, {w}, {c}]"
                    )
                batch.append(decode_image(image, entry.preprocessing, index=i))
        return np.stack(batch)

    @staticmethod
    def _spatial_layer(entry: ExplainableVersion, name: str) -> LayerSpec:
        spec = entry.model.layer(name)
        if spec is None or not spec.spatial:
            valid = ", ".join(s.name for s in entry.model.spatial_layers)
            if spec is None:
                problem = f"model {entry.name!r} has no layer {name!r}"
            else:
                problem = (
                    f"layer {name!r} of model {entry.name!r} has no spatial output (shape {list(spec.output_shape)})"
                )
            raise InvalidArgument(f"{problem}; valid layers: {valid}")
        return spec

    @staticmethod
    def _channels(entry: ExplainableVersion, spec: LayerSpec, indices: list[int], what: str) -> list[int]:
        bad = [i for i in indices if not 0 <= i < spec.channels]
        if bad:
            raise InvalidArgument(
                f"{what} {bad} out of range for layer {spec.name!r} of model {entry.name!r}, "
                f"which has {spec.channels}: valid {what} are 0..{spec.channels - 1}"
            )
        return list(indices)

    # ---- the four calls ------------------------------------------------------------------------------

    async def heatmap(
        self,
        model: str,
        version: str,
        images: list[ImageInput],
        *,
        method: str = "",
        layer: str = "",
        target: int | None = None,
        alpha: float | None = None,
        max_channels: int = 0,
        deadline: float | None = None,
    ) -> HeatmapOutput:
        entry = await self._entry(model, version)
        if method and method not in cams.METHODS:
            raise InvalidArgument(f"unknown heatmap method {method!r}; expected one of {', '.join(cams.METHODS)}")
        if layer:
            self._spatial_layer(entry, layer)
        layer, method = entry.resolve(layer, method)
        self._spatial_layer(entry, layer)
        classes = entry.model.layers[-1].output_shape[-1]
        if target is not None and not 0 <= target < classes:
            raise InvalidArgument(f"target_class {target} is out of range; model {model!r} has {classes} classes")
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgument(f"overlay_alpha must be in [0, 1], got {alpha}")
        limit = self.settings.max_score_cam_channels
        if not 0 <= max_channels <= limit:
            raise InvalidArgument(f"max_channels must be in 0..{limit}, got {max_channels}")
        max_channels = max_channels or self.settings.default_score_cam_channels
        pixels = await asyncio.to_thread(self._images, entry, images)

        def work(job) -> HeatmapOutput:
            result = cams.heatmaps(entry.model, pixels, layer, method, target, max_channels, stop=job.check)
            items = []
            for i in range(len(pixels)):
                probs = result.probabilities[i]
                top, chosen = int(np.argmax(probs)), int(result.target[i])
                items.append(
                    HeatmapItem(
                        heatmap=result.heatmaps[i],
                        predicted_class=top,
                        predicted_label=entry.label(top),
                        predicted_score=float(probs[top]),
                        target_class=chosen,
                        target_score=float(probs[chosen]),
                        overlay_png=overlay_png(pixels[i], result.heatmaps[i], alpha),
                    )
                )
            return HeatmapOutput(
                entry.name, entry.version, layer, method, entry.model.pre_softmax, items, entry.score(layer, method)
            )

        return await self._run("Heatmap", len(pixels), work, deadline)

    async def activations(
        self,
        model: str,
        version: str,
        images: list[ImageInput],
        layer: str,
        channels: list[int] | None = None,
        *,
        omit_tensors: bool = False,
        deadline: float | None = None,
    ) -> ActivationsOutput:
        entry = await self._entry(model, version)
        if not layer:
            raise InvalidArgument(
                f"no layer given; valid layers: {', '.join(s.name for s in entry.model.spatial_layers)}"
            )
        spec = self._spatial_layer(entry, layer)
        chosen = self._channels(entry, spec, list(channels or []), "channels") or list(range(spec.channels))
        pixels = await asyncio.to_thread(self._images, entry, images)
        columns = grid_columns(len(chosen))

        def work(job) -> ActivationsOutput:
            import tensorflow as tf

            out = entry.model.activations(layer)(tf.constant(pixels.astype(np.float32))).numpy()
            selected = out[..., chosen]
            items = []
            for i in range(len(pixels)):
                tiles, dead = channel_tiles(selected[i])
                items.append(
                    ActivationItem(
                        None if omit_tensors else selected[i].astype(np.float32),
                        encode_png(grid(tiles, columns)),
                        [chosen[d] for d in dead],
                    )
                )
            return ActivationsOutput(entry.name, entry.version, layer, chosen, columns, items)

        return await self._run("Activations", len(pixels), work, deadline)

    async def filter_patterns(
        self,
        model: str,
        version: str,
        layer: str,
        filters: list[int],
        *,
        steps: int = 0,
        step_size: float = 0.0,
        size: int = 0,
        regularized: bool = False,
        seed: int = 0,
        deadline: float | None = None,
    ) -> PatternsOutput:
        s = self.settings
        entry = await self._entry(model, version)
        if not layer:
            raise InvalidArgument(
                f"no layer given; valid layers: {', '.join(x.name for x in entry.model.spatial_layers)}"
            )
        spec = self._spatial_layer(entry, layer)
        if not filters:
            raise InvalidArgument(f"no filters given; layer {layer!r} has filters 0..{spec.channels - 1}")
        if len(filters) > s.max_filters:
            raise InvalidArgument(f"{len(filters)} filters exceed the explainer's limit of {s.max_filters} per request")
        self._channels(entry, spec, filters, "filters")
        steps = steps or patterns.DEFAULT_STEPS
        if not 0 < steps <= s.max_steps:
            raise InvalidArgument(f"steps must be in 1..{s.max_steps}, got {steps}")
        step_size = step_size or patterns.DEFAULT_STEP_SIZE
        if not (np.isfinite(step_size) and step_size > 0):
            raise InvalidArgument(f"step_size must be a positive number, got {step_size}")
        h, w, _ = entry.model.input_shape
        if size == 0 and h != w:
            raise InvalidArgument(f"model {model!r} takes {h}x{w} images; give a square size")
        size = size or h
        if not 8 <= size <= s.max_pattern_size:
            raise InvalidArgument(f"size must be in 8..{s.max_pattern_size} pixels, got {size}")
        work_units = len(set(filters)) * steps * size * size
        if work_units > s.max_pattern_pixel_steps:
            raise InvalidArgument(
                f"filters x steps x size^2 = {len(set(filters))} x {steps} x {size}^2 = {work_units} exceeds the "
                f"explainer's limit of {s.max_pattern_pixel_steps}; ask for fewer filters, steps or pixels"
            )
        params = patterns.PatternParams(steps, float(step_size), size, regularized, int(seed))
        deadline_at = _monotonic(deadline)  # checked between ascent steps

        def work(job) -> PatternsOutput:
            try:
                found = patterns.filter_patterns(
                    entry.model,
                    entry.key,
                    layer,
                    list(filters),
                    params,
                    self.cache,
                    deadline_at=deadline_at,
                    stop=job.check,
                )
            except TimeoutError as exc:
                raise DeadlineExceeded(f"filter patterns: {exc}") from exc
            return PatternsOutput(
                entry.name,
                entry.version,
                layer,
                [(p.filter, encode_png(p.image), p.activation, p.cached) for p in found],
            )

        return await self._run("FilterPatterns", len(set(filters)), work, deadline)

    async def faithfulness(
        self,
        model: str,
        version: str,
        images: list[ImageInput],
        *,
        layers: list[str] | None = None,
        methods: list[str] | None = None,
        mask_threshold: int | None = None,
        steps: int = 0,
        deadline: float | None = None,
    ) -> FaithfulnessOutput:
        """Score the heatmaps again on the caller's images (explainer/faithfulness.py): bounded by max_images
        images, the candidate (or named) layers and the four (or named) methods."""
        entry = await self._entry(model, version)
        for layer in layers or ():
            self._spatial_layer(entry, layer)
        bad = [m for m in methods or () if m not in cams.METHODS]
        if bad:
            raise InvalidArgument(f"unknown heatmap methods {bad}; expected some of {', '.join(cams.METHODS)}")
        if mask_threshold is not None and not 0 <= mask_threshold <= 254:
            raise InvalidArgument(f"mask_threshold must be in 0..254, got {mask_threshold}")
        if not 0 <= steps <= MAX_CURVE_STEPS:
            raise InvalidArgument(f"steps must be in 0..{MAX_CURVE_STEPS} (0: 16), got {steps}")
        pixels = await asyncio.to_thread(self._images, entry, images)
        bounds = faithfulness.Bounds(
            samples=len(pixels),
            steps=steps or faithfulness.Bounds.steps,
            methods=tuple(dict.fromkeys(methods or cams.METHODS)),
            score_cam_channels=self.settings.default_score_cam_channels,
        )

        def work(job) -> FaithfulnessOutput:
            masks = None if mask_threshold is None else faithfulness.ink_masks(pixels, mask_threshold)
            report = faithfulness.score_model(
                entry.model,
                pixels,
                masks,
                list(dict.fromkeys(layers or ())),
                bounds,
                recorded=[entry.default_layer],
                check=job.check,
            )
            best = report.default
            return FaithfulnessOutput(
                entry.name,
                entry.version,
                [s.as_dict() for s in report.scores],
                best.layer if best else "",
                best.method if best else "",
                entry.default_layer,
                entry.default_method,
                report.samples,
                report.seconds,
            )

        return await self._run("Faithfulness", len(pixels), work, deadline)

    async def list_layers(self, model: str, version: str) -> LayersOutput:
        entry = await self._entry(model, version)
        m = entry.model
        scored = entry.faithfulness or {}
        return LayersOutput(
            entry.name,
            entry.version,
            list(m.layers),
            entry.default_layer,
            m.input_shape,
            entry.labels,
            entry.default_method,
            list(scored.get("scores") or ()),
            str(scored.get("source", "")),
            int(scored.get("samples", 0)),
        )
