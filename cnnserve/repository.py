"""Reading a Triton-layout model repository into plain model specifications.

    models/NAME/config.pbtxt      Triton ModelConfig in protobuf text format
    models/NAME/labels.txt        one label per line (optional; named by an output's label_filename)
    models/NAME/VERSION/model.onnx
    models/NAME/VERSION/metadata.json   (optional; preprocessing for the image-level API)

Everything the server needs to serve a model is in its folder; no code per model. A folder with only
``VERSION/model.onnx`` is served with a config completed from the graph (``autocomplete.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from cnnserve._proto.inference import model_config_pb2 as mc
from cnnserve.autocomplete import DEFAULT_MAX_BATCH_SIZE, GraphNotDescribable, complete_config
from cnnserve.protocol import CONFIG_TO_DATATYPE
from cnnserve.service.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

SUPPORTED_PLATFORMS = {"onnxruntime_onnx"}
SUPPORTED_BACKENDS = {"", "onnxruntime"}
# A model name is one path segment: no separators, no "..", nothing that could leave the repository.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ModelConfigError(ValueError):
    """A model folder that cannot be served, with the reason."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the server sees it: KServe datatype and dims without the batch dimension."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    label_filename: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One servable model version, read from the repository."""

    name: str
    version: str
    path: Path  # the version folder
    model_file: Path
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: bool
    max_queue_delay_s: float
    max_queue_size: int  # 0: server default
    preferred_batch_size: int
    instances: int
    kind: str  # "CPU", "GPU" or "AUTO"
    intra_op_threads: int = 0  # Triton's onnxruntime parameter intra_op_thread_count; 0: the server's setting
    labels: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    config: mc.ModelConfig = field(default_factory=mc.ModelConfig, compare=False, repr=False)

    @property
    def batching(self) -> bool:
        """Whether the first dimension of every tensor is a batch dimension."""
        return self.max_batch_size > 0

    def full_shape(self, tensor: TensorSpec) -> list[int]:
        """The KServe shape of a tensor, -1 for the batch dimension."""
        return ([-1] if self.batching else []) + list(tensor.dims)


def validate_model_name(name: str) -> str:
    """Refuse names that are not a single safe path segment (no request can reach outside the repository)."""
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise InvalidArgument(
            f"invalid model name {name!r}: expected 1-128 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def is_model_folder(path: Path) -> bool:
    """A folder with a config.pbtxt, or a bare one with a ``VERSION/model.onnx`` (its config is completed)."""
    if (path / "config.pbtxt").is_file():
        return True
    return path.is_dir() and any(v.name.isdigit() and (v / "model.onnx").is_file() for v in path.iterdir())


def list_model_names(repository: Path) -> list[str]:
    """Folders of the repository that hold a model (``is_model_folder``), sorted."""
    if not repository.is_dir():
        raise ModelConfigError(f"model repository {str(repository)!r} is not a directory")
    return sorted(p.name for p in repository.iterdir() if _NAME_RE.match(p.name) and is_model_folder(p))


def parse_config(text: str, *, source: str = "config.pbtxt") -> mc.ModelConfig:
    """Parse Triton's text format; fields cnnserve does not model are skipped with a log line."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise ModelConfigError(f"{source}: {exc}") from exc
    return config


def read_model(
    repository: Path, name: str, *, auto_complete_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> list[ModelSpec]:
    """Read a model's folder and return the versions its version policy serves, newest first.

    Without a config.pbtxt, or with one naming no inputs and no outputs, the config is completed from the
    newest version's graph (``autocomplete.complete_config``; a dynamic first dimension batches up to
    ``auto_complete_max_batch_size``).
    """
    validate_model_name(name)
    folder = repository / name
    config_path = folder / "config.pbtxt"
    if not is_model_folder(folder):
        raise NotFound(f"model {name!r} is not in the repository (no {name}/config.pbtxt nor {name}/1/model.onnx)")
    if config_path.is_file():
        config = parse_config(config_path.read_text(), source=str(config_path))
    else:
        config = mc.ModelConfig()
    if config.name and config.name != name:
        raise ModelConfigError(f"{config_path}: name {config.name!r} does not match the folder name {name!r}")
    config.name = name
    if not config.input and not config.output:
        _auto_complete(config, folder, auto_complete_max_batch_size)
    if not config.platform and config.backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
    if config.platform not in SUPPORTED_PLATFORMS or config.backend not in SUPPORTED_BACKENDS:
        raise ModelConfigError(
            f"{config_path}: platform {config.platform!r} / backend {config.backend!r} is not served; "
            f"expected platform one of {sorted(SUPPORTED_PLATFORMS)}"
        )
    if not config.input or not config.output:
        raise ModelConfigError(f"{config_path}: a model needs at least one input and one output")
    if config.max_batch_size < 0:
        raise ModelConfigError(f"{config_path}: max_batch_size must be >= 0, got {config.max_batch_size}")

    inputs = tuple(_tensor(t, config_path) for t in config.input)
    outputs = tuple(_tensor(t, config_path) for t in config.output)
    labels = _labels(folder, outputs)
    versions = _select_versions(folder, config)
    if not versions:
        raise ModelConfigError(f"{folder}: no version folder (a number) with a model file")

    batching = config.HasField("dynamic_batching")
    delay_us = config.dynamic_batching.max_queue_delay_microseconds if batching else 0
    queue_size = config.dynamic_batching.default_queue_policy.max_queue_size if batching else 0
    preferred = max(config.dynamic_batching.preferred_batch_size, default=0) if batching else 0
    instances = sum(max(g.count, 1) for g in config.instance_group) or 1
    kinds = {mc.ModelInstanceGroup.Kind.Name(g.kind).removeprefix("KIND_") for g in config.instance_group}
    kind = "GPU" if "GPU" in kinds else ("CPU" if kinds == {"CPU"} else "AUTO")
    filename = config.default_model_filename or "model.onnx"
    intra_op_threads = _int_parameter(config, "intra_op_thread_count", config_path)

    specs = []
    for version in versions:
        vdir = folder / version
        specs.append(
            ModelSpec(
                name=name,
                version=version,
                path=vdir,
                model_file=vdir / filename,
                platform=config.platform,
                max_batch_size=config.max_batch_size,
                inputs=inputs,
                outputs=outputs,
                dynamic_batching=batching,
                max_queue_delay_s=delay_us / 1e6,
                max_queue_size=queue_size,
                preferred_batch_size=preferred,
                instances=instances,
                kind=kind,
                intra_op_threads=intra_op_threads,
                labels=labels,
                metadata=_metadata(vdir),
                config=config,
            )
        )
    return specs


def _auto_complete(config: mc.ModelConfig, folder: Path, max_batch_size: int) -> None:
    filename = config.default_model_filename or "model.onnx"
    newest = max((p for p in folder.iterdir() if p.name.isdigit() and (p / filename).is_file()),
                 key=lambda p: int(p.name), default=None)  # fmt: skip
    if newest is None:
        raise ModelConfigError(f"{folder}: no config inputs or outputs, and no version folder with {filename}")
    try:
        complete_config(config, folder, newest / filename, max_batch_size)
    except GraphNotDescribable as exc:
        raise ModelConfigError(f"cannot complete the config from the graph: {exc}") from exc
    log.info("model %s: config completed from %s (max_batch_size %d)", config.name, newest / filename,
             config.max_batch_size)  # fmt: skip


def _tensor(t: mc.ModelInput | mc.ModelOutput, source: Path) -> TensorSpec:
    if not t.name:
        raise ModelConfigError(f"{source}: a tensor has no name")
    datatype = CONFIG_TO_DATATYPE.get(t.data_type)
    if datatype is None:
        raise ModelConfigError(f"{source}: tensor {t.name!r} has unsupported data_type {mc.DataType.Name(t.data_type)}")
    dims = tuple(int(d) for d in t.dims)
    if any(d == 0 or d < -1 for d in dims):
        raise ModelConfigError(f"{source}: tensor {t.name!r} has invalid dims {list(dims)}")
    return TensorSpec(t.name, datatype, dims, getattr(t, "label_filename", ""))


def _labels(folder: Path, outputs: tuple[TensorSpec, ...]) -> tuple[str, ...]:
    for out in outputs:
        if out.label_filename:
            path = folder / out.label_filename
            if path.parent != folder or not path.is_file():
                raise ModelConfigError(f"{folder}: label file {out.label_filename!r} not found in the model folder")
            labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
            if out.dims and out.dims[-1] > 0 and len(labels) != out.dims[-1]:
                raise ModelConfigError(
                    f"{path}: {len(labels)} labels for output {out.name!r} with {out.dims[-1]} classes"
                )
            return labels
    return ()


def _int_parameter(config: mc.ModelConfig, key: str, source: Path) -> int:
    """A non-negative integer from ``parameters { key: KEY value: { string_value: "N" } }``; 0 when absent."""
    if key not in config.parameters:
        return 0
    text = config.parameters[key].string_value.strip()
    if not text.isdigit():
        raise ModelConfigError(f"{source}: parameter {key!r} must be a non-negative integer, got {text!r}")
    return int(text)


def _select_versions(folder: Path, config: mc.ModelConfig) -> list[str]:
    filename = config.default_model_filename or "model.onnx"
    available = sorted(
        (int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and (p / filename).is_file()),
        reverse=True,
    )
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        chosen = available
    elif choice == "specific":
        wanted = set(policy.specific.versions)
        chosen = [v for v in available if v in wanted]
    else:
        n = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
        chosen = available[:n]
    return [str(v) for v in chosen]


# The parity a version must show: export writes none that misses it, and the server serves none whose
# metadata.json records less.
PARITY_MAX_ABS_DIFF = 1e-4
PARITY_TOP1_REQUIRED = 1.0
# An fp16 version (metadata "precision": "fp16") also records its parity against the fp32 ONNX model:
# probabilities within 1e-2, the same top-1 class wherever fp32's top two are further apart than 2e-2
# (cnnserve.export.fp16 says why).
FP16_MAX_ABS_DIFF = 1e-2
PRECISIONS = ("fp32", "fp16")


def fp16_parity_failure(report: dict) -> str:
    """Why an fp16 parity report (``parity_fp16`` in metadata.json) does not pass, or "" when it does."""
    diff = report.get("max_abs_diff")
    if report.get("decisive_top1_agreement") != 1.0 or diff is None or not diff <= FP16_MAX_ABS_DIFF:
        return (
            f"fp16/fp32 parity failed on {report.get('samples')} samples: top-1 agreement "
            f"{report.get('decisive_top1_agreement')} on the {report.get('decisive_samples')} with a clear fp32 "
            f"margin (need 1.0), max |dprob| {diff} (need <= {FP16_MAX_ABS_DIFF:g})"
        )
    return ""


def verify_integrity(spec: ModelSpec) -> None:
    """Refuse a model whose file does not match the hash export recorded, or whose parity report failed.

    Models without metadata.json (e.g. a plain Triton repository) are served as they are.
    """
    hashes = spec.metadata.get("hashes") or {}
    expected = hashes.get("onnx_sha256")
    if expected:
        actual = file_sha256(spec.model_file)
        if actual != expected:
            raise ModelConfigError(
                f"{spec.model_file}: sha256 {actual[:12]}... does not match {expected[:12]}... recorded in "
                "metadata.json (file corrupt, truncated or replaced without re-export)"
            )
    parity = spec.metadata.get("parity")
    if parity:
        agreement, diff = parity.get("top1_agreement"), parity.get("max_abs_diff")
        if agreement != PARITY_TOP1_REQUIRED or diff is None or diff > PARITY_MAX_ABS_DIFF:
            raise ModelConfigError(
                f"{spec.name} v{spec.version}: metadata.json records a failed parity check "
                f"(top-1 agreement {agreement}, max |dp| {diff}; required {PARITY_TOP1_REQUIRED} and <= {PARITY_MAX_ABS_DIFF})"
            )
    precision = spec.metadata.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ModelConfigError(
            f"{spec.name} v{spec.version}: metadata.json precision {precision!r} is not one of {PRECISIONS}"
        )
    if precision == "fp16":
        failure = fp16_parity_failure(spec.metadata.get("parity_fp16") or {})
        if failure:
            raise ModelConfigError(f"{spec.name} v{spec.version}: metadata.json records a failed check: {failure}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(repository: Path, name: str) -> tuple:
    """What changes when a model folder changes: names, sizes and mtimes of its config, labels and versions."""
    folder = repository / name
    entries = []
    for path in sorted(folder.glob("*")):
        if path.is_file():
            st = path.stat()
            entries.append((path.name, st.st_size, st.st_mtime_ns))
        elif path.is_dir() and path.name.isdigit():
            for child in sorted(path.iterdir()):
                if child.is_file():
                    st = child.stat()
                    entries.append((f"{path.name}/{child.name}", st.st_size, st.st_mtime_ns))
    return tuple(entries)


def _metadata(version_dir: Path) -> dict[str, Any]:
    path = version_dir / "metadata.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: not valid JSON: {exc}") from exc
