"""The sidecar's models: every served version's model.keras, loaded once and wrapped for explanation.

The versions are those the main server serves (the same repository reader and version policy); a version
without a model.keras, or whose layers cannot be re-run on a float input (graph.py), is skipped with a log line.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from cnnserve.explainer.cams import METHODS
from cnnserve.explainer.graph import ExplainableModel, NotExplainable
from cnnserve.repository import (
    ModelConfigError,
    ModelSpec,
    is_model_folder,
    list_model_names,
    read_model,
    validate_model_name,
)
from cnnserve.service.errors import FailedPrecondition, NotFound
from cnnserve.service.imaging import ImageDecoding

log = logging.getLogger(__name__)
KERAS_FILE = "model.keras"
DEFAULT_METHOD = "gradcam"  # where metadata.json has no faithfulness default


class MissingKeras(NotExplainable):
    """The version has a model.onnx but no model.keras beside it (an ONNX-only model)."""


@dataclass
class ExplainableVersion:
    """One explainable model version."""

    name: str
    version: str
    model: ExplainableModel
    labels: tuple[str, ...]
    preprocessing: ImageDecoding | None  # None: the model takes raw tensors only
    default_layer: str
    default_method: str = DEFAULT_METHOD
    faithfulness: dict | None = None  # metadata.json's "faithfulness" (explainer/faithfulness.py), if scored

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else ""

    def resolve(self, layer: str, method: str) -> tuple[str, str]:
        """The (layer, method) a request gets: what it names, exactly; what it leaves empty comes from the scores
        (the best-scoring one that passes the randomisation check, with the other as named), else the
        model's defaults."""
        if layer and method:
            return layer, method
        if not layer and not method:
            return self.default_layer, self.default_method
        fits = [
            entry
            for entry in (self.faithfulness or {}).get("scores") or ()
            if entry.get("passes_randomisation") and (entry.get("layer") == layer or entry.get("method") == method)
        ]
        best = max(fits, key=lambda entry: entry.get("score", 0.0), default=None)
        if best is not None and best.get("method") in METHODS and self.model.layer(str(best.get("layer"))):
            return layer or best["layer"], method or best["method"]
        return layer or self.default_layer, method or self.default_method

    def score(self, layer: str, method: str) -> dict | None:
        """The faithfulness score of (``layer``, ``method``) from metadata.json, if it was scored."""
        for entry in (self.faithfulness or {}).get("scores") or ():
            if entry.get("layer") == layer and entry.get("method") == method:
                return entry
        return None


def _scored_default(spec: ModelSpec, model: ExplainableModel) -> tuple[str, str] | None:
    """metadata.json's ``faithfulness.default`` (layer, method), when it names a spatial layer and a method."""
    chosen = (spec.metadata.get("faithfulness") or {}).get("default") or {}
    layer, method = chosen.get("layer"), chosen.get("method")
    if method in METHODS and layer and (found := model.layer(layer)) is not None and found.spatial:
        return layer, method
    return None


def _default_layer(spec: ModelSpec, model: ExplainableModel) -> str:
    """The first of these that names a spatial layer of the model: the faithfulness score's default
    (metadata.json's ``faithfulness.default``, see _scored_default), ``layers.cam``, its
    ``layers.last_conv`` (metadata written before ``cam`` existed), the registry's Grad-CAM layer for its
    variant; else the last convolution."""
    recorded = spec.metadata.get("layers") or {}
    scored = _scored_default(spec, model)
    candidates = [scored[0] if scored else None, recorded.get("cam"), recorded.get("last_conv")]
    if spec.metadata.get("variant"):
        try:
            from cnnserve.training.registry import get_variant

            candidates.append(get_variant(spec.metadata["variant"]).heatmap_layer)
        except (ImportError, KeyError):
            pass
    for named in candidates:
        if named and (layer := model.layer(named)) is not None and layer.spatial:
            return named
    return model.default_heatmap_layer()


def load_version(spec: ModelSpec) -> ExplainableVersion:
    """Load ``spec``'s model.keras (compile=False) and wrap it. Raises NotExplainable or OSError."""
    import keras

    path = spec.path / KERAS_FILE
    if not path.is_file():
        raise MissingKeras(
            f"{path} does not exist: heatmaps need the model.keras beside model.onnx (`cnnserve export VARIANT` and "
            "`cnnserve export --keras` write it; an ONNX-only model has none)"
        )
    keras_model = keras.saving.load_model(path, compile=False)
    model = ExplainableModel(keras_model)
    try:
        pre = ImageDecoding.from_metadata(spec.name, spec.metadata)
    except FailedPrecondition:
        pre = None
    labels = spec.labels or tuple(spec.metadata.get("labels") or ())
    scored = _scored_default(spec, model)
    faithfulness = spec.metadata.get("faithfulness")
    return ExplainableVersion(
        spec.name,
        spec.version,
        model,
        tuple(labels),
        pre,
        _default_layer(spec, model),
        scored[1] if scored else DEFAULT_METHOD,
        faithfulness if isinstance(faithfulness, dict) else None,
    )


class ModelTable:
    """Name -> version -> ExplainableVersion. ``load_all`` at start; unknown names trigger one rescan."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.models: dict[str, dict[str, ExplainableVersion]] = {}
        self.problems: dict[str, str] = {}  # "name/version" -> why it is not explainable
        self.onnx_only: dict[str, str] = {}  # name -> why: served, but no version has a model.keras
        self._lock = threading.Lock()

    def load_all(self) -> None:
        for name in list_model_names(self.repository):
            self.load(name)
        log.info("explainer: %d model(s) ready: %s", len(self.models), ", ".join(sorted(self.models)) or "none")

    def load(self, name: str) -> None:
        try:
            specs = read_model(self.repository, name)
        except (ModelConfigError, NotFound) as exc:
            self.problems[name] = str(exc)
            log.warning("explainer: skipping model %s: %s", name, exc)
            return
        versions = {}
        missing = []
        for spec in specs:
            try:
                versions[spec.version] = load_version(spec)
            except MissingKeras as exc:
                missing.append(str(exc))
                self.problems[f"{name}/{spec.version}"] = str(exc)
                log.warning("explainer: %s version %s is not explainable: %s", name, spec.version, exc)
            except (NotExplainable, OSError, ValueError) as exc:
                self.problems[f"{name}/{spec.version}"] = str(exc)
                log.warning("explainer: %s version %s is not explainable: %s", name, spec.version, exc)
        if missing and len(missing) == len(specs):
            self.onnx_only[name] = missing[0]
        else:
            self.onnx_only.pop(name, None)
        if versions:
            with self._lock:
                self.models[name] = versions

    def get(self, name: str, version: str = "") -> ExplainableVersion:
        validate_model_name(name)
        if name not in self.models and is_model_folder(self.repository / name):
            self.load(name)  # exported after the sidecar started
        versions = self.models.get(name)
        if not versions and name in self.onnx_only:
            raise FailedPrecondition(f"model {name!r} has no heatmaps, activations or filters: {self.onnx_only[name]}")
        if not versions:
            why = self.problems.get(name) or next((v for k, v in self.problems.items() if k.startswith(f"{name}/")), "")
            known = ", ".join(sorted(self.models)) or "none"
            detail = f" ({why})" if why else ""
            raise NotFound(f"model {name!r} is not explainable{detail}; explainable models: {known}")
        if not version:
            return versions[max(versions, key=int)]
        if version not in versions:
            raise NotFound(
                f"model {name!r} has no explainable version {version!r}; versions: {sorted(versions, key=int)}"
            )
        return versions[version]
