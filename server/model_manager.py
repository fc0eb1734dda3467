"""The set of served models: load, warm up, look up, reload and unload, without dropping requests.

Each served model version owns an onnxruntime session, a dynamic batcher and its statistics. A reload
builds and warms the new version completely before it replaces the old one; the old batcher then drains,
so requests that were already queued finish on the version that accepted them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cnnserve.repository import (
    ModelConfigError,
    ModelSpec,
    fingerprint,
    list_model_names,
    read_model,
    validate_model_name,
    verify_integrity,
)
from cnnserve.server.batcher import DynamicBatcher, warmup_sizes
from cnnserve.server.memory import MemoryBudgetError, check_fit, session_need
from cnnserve.server.providers import CUDA, ProviderPlan
from cnnserve.server.runtime import OnnxModel
from cnnserve.server.settings import ServerSettings
from cnnserve.server.stats import ModelStats
from cnnserve.service.errors import InvalidArgument, NotFound, ServingError, Unavailable

log = logging.getLogger(__name__)


@dataclass
class ServedVersion:
    """One model version in service."""

    spec: ModelSpec
    runtime: OnnxModel
    batcher: DynamicBatcher
    stats: ModelStats


@dataclass
class ModelEntry:
    """A model of the repository and its state, as RepositoryIndex reports it."""

    name: str
    state: str = "UNAVAILABLE"  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""
    versions: dict[str, ServedVersion] = field(default_factory=dict)  # newest first

    @property
    def latest(self) -> ServedVersion | None:
        return next(iter(self.versions.values()), None)


class ModelManager:
    """Loads the repository's models and answers "which version serves this request"."""

    def __init__(
        self,
        settings: ServerSettings,
        plan: ProviderPlan | list[str],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_change = on_change or (lambda: None)
        self.repository = Path(settings.model_repository)
        self.plan = plan if isinstance(plan, ProviderPlan) else ProviderPlan("cuda" if CUDA in plan else "cpu")
        self.providers = self.plan.provider_names()
        self.models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._fingerprints: dict[str, tuple] = {}

    async def load_all(self) -> None:
        """Load every model in the repository; a model that fails is UNAVAILABLE with its reason."""
        names = list_model_names(self.repository)
        if self.settings.gpu_memory_bytes:
            await asyncio.to_thread(self._check_memory_at_start, names)
        for name in names:
            self.models.setdefault(name, ModelEntry(name, state="LOADING"))
        for name in names:
            try:
                await self.load(name)
            except Exception as exc:  # one bad model must not keep the others from serving
                log.error("model %s not loaded: %s", name, exc)

    async def load(self, name: str) -> ModelEntry:
        """Load or reload a model; on failure the versions already serving keep serving."""
        validate_model_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            entry = self.models.setdefault(name, ModelEntry(name))
            if not entry.versions:
                entry.state = "LOADING"
            # Taken before reading, so a change made while loading is seen by the next poll.
            self._fingerprints[name] = await asyncio.to_thread(fingerprint, self.repository, name)
            started: dict[str, ServedVersion] = {}
            try:
                specs = await asyncio.to_thread(
                    read_model, self.repository, name,
                    auto_complete_max_batch_size=self.settings.auto_complete_max_batch_size,
                )  # fmt: skip
                if self.settings.gpu_memory_bytes:
                    await asyncio.to_thread(self._check_memory_for, name, specs)
                for spec in specs:
                    started[spec.version] = await self._start_version(spec)
            except Exception as exc:
                await self._retire(started.values())
                entry.reason = f"load failed: {getattr(exc, 'message', exc)}"
                entry.state = "READY" if entry.versions else "UNAVAILABLE"
                if isinstance(exc, ServingError):
                    raise
                raise InvalidArgument(f"failed to load model {name!r}: {exc}") from exc
            old = entry.versions
            entry.versions, entry.state, entry.reason = started, "READY", ""
            log.info("model %s ready, versions %s", name, list(started))
            self._on_change()
        await self._retire(old.values())
        return entry

    def _check_memory_at_start(self, names: list[str]) -> None:
        """Every model's versions together against --gpu-memory-bytes: MemoryBudgetError stops the start."""
        needs = []
        for name in names:
            try:
                specs = read_model(
                    self.repository, name, auto_complete_max_batch_size=self.settings.auto_complete_max_batch_size
                )
            except Exception:  # its load reports the reason; it takes no memory
                continue
            needs.extend(session_need(spec) for spec in specs)
        check_fit(needs, self.settings.gpu_memory_bytes)

    def _check_memory_for(self, name: str, specs: list[ModelSpec]) -> None:
        """A (re)load: the new versions beside every other model's served ones (its own old ones go)."""
        others = [session_need(v.spec) for e in self.models.values() if e.name != name for v in e.versions.values()]
        needs = [*others, *(session_need(spec) for spec in specs)]
        try:
            check_fit(needs, self.settings.gpu_memory_bytes, f"{name} beside the served models")
        except MemoryBudgetError as exc:
            raise ModelConfigError(str(exc)) from exc

    async def poll_once(self) -> None:
        """Bring the served set in line with the repository: load new or changed models, unload removed ones.

        A model that fails to load is retried only after its folder changes again; the version that was
        serving keeps serving meanwhile.
        """
        on_disk = set(await asyncio.to_thread(list_model_names, self.repository))
        for name in sorted(on_disk):
            current = await asyncio.to_thread(fingerprint, self.repository, name)
            if self._fingerprints.get(name) == current:
                continue
            log.info("model %s changed in the repository; loading", name)
            try:
                await self.load(name)
            except Exception as exc:
                log.error("model %s not reloaded, previous version keeps serving: %s", name, exc)
        for name in sorted(set(self._fingerprints) - on_disk):
            self._fingerprints.pop(name, None)
            if name in self.models and self.models[name].versions:
                log.info("model %s removed from the repository; unloading", name)
                await self.unload(name)

    async def poll_forever(self, interval: float) -> None:
        """Poll the repository every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:  # a transient error (e.g. the folder being replaced) must not stop polling
                log.exception("repository poll failed")

    async def unload(self, name: str) -> None:
        """Stop serving a model; queued requests finish first."""
        entry = self.models.get(validate_model_name(name))
        if entry is None:
            raise NotFound(f"model {name!r} is not loaded")
        async with self._locks.setdefault(name, asyncio.Lock()):
            old, entry.versions = entry.versions, {}
            entry.state, entry.reason = "UNLOADING", ""
            await self._retire(old.values())
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
            self._on_change()

    async def close(self) -> None:
        """Drain every batcher (used at shutdown, after the gRPC server stopped accepting)."""
        await self._retire(self.served_versions())

    def served_versions(self) -> list[ServedVersion]:
        """Every version in service now, model by model (a snapshot: loads and unloads may follow)."""
        return [v for e in list(self.models.values()) for v in list(e.versions.values())]

    def get(self, name: str, version: str = "") -> ServedVersion:
        """The version that serves a request, or NOT_FOUND / UNAVAILABLE with the reason."""
        entry = self.models.get(name)
        if entry is None:
            validate_model_name(name)
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"unknown model {name!r}; models in the repository: {known}")
        if not entry.versions:
            raise Unavailable(
                f"model {name!r} is not ready ({entry.state.lower()}{': ' + entry.reason if entry.reason else ''})"
            )
        if not version:
            return entry.latest  # type: ignore[return-value]
        served = entry.versions.get(version)
        if served is None:
            raise NotFound(f"model {name!r} has no version {version!r}; served versions: {', '.join(entry.versions)}")
        return served

    def check_repository(self, name: str) -> None:
        """Repository calls may name the repository; this server serves one."""
        if name and name != self.repository.name:
            raise NotFound(f"unknown repository {name!r}; this server serves {self.repository.name!r}")

    def index(self, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) of every model in the repository or loaded, a row per served version."""
        rows = []
        for name in sorted(set(list_model_names(self.repository)) | set(self.models)):
            entry = self.models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append((name, "", "UNAVAILABLE", "not loaded"))
                continue
            if ready_only and entry.state != "READY":
                continue
            rows.extend((name, version, entry.state, entry.reason) for version in list(entry.versions) or [""])
        return rows

    def capacity(self) -> int:
        """How many requests the served versions can hold at once: each queue's bound plus its running batches."""
        return sum(
            v.batcher.max_queue_size + v.batcher.max_batch_size * v.batcher.instances for v in self.served_versions()
        )

    def ready(self) -> bool:
        return bool(self.models) and all(e.state == "READY" for e in self.models.values() if e.reason != "unloaded")

    async def _start_version(self, spec: ModelSpec) -> ServedVersion:
        if spec.kind == "GPU" and CUDA not in self.providers:
            log.warning("model %s asks for KIND_GPU; serving on %s", spec.name, self.providers)
        plan = self.plan.for_model(spec)
        await asyncio.to_thread(verify_integrity, spec)
        threads = spec.intra_op_threads or self.settings.intra_op_threads  # the model's config.pbtxt wins
        runtime = await asyncio.to_thread(OnnxModel, spec, plan, threads)
        stats = ModelStats(name=spec.name, version=spec.version)
        batcher = DynamicBatcher(
            runtime.run,
            name=f"{spec.name}:{spec.version}",
            max_batch_size=max(spec.max_batch_size, 1),
            max_queue_delay_s=spec.max_queue_delay_s,
            max_queue_size=spec.max_queue_size or self.settings.max_queue_size,
            stats=stats,
            instances=spec.instances,
            preferred_batch_size=spec.preferred_batch_size,
            batching=self.settings.batching and spec.dynamic_batching,
            batch_dimension=spec.batching,
        )
        await batcher.start()
        if self.settings.warmup:
            try:
                sizes = [size for size in warmup_sizes(batcher.max_batch_size) for _ in range(runtime.warmup_runs)]
                await batcher.warmup(runtime.example_inputs(1), sizes)
            except Exception as exc:
                await batcher.stop(drain=False)
                raise ModelConfigError(f"model {spec.name} v{spec.version} failed warm-up: {exc}") from exc
        return ServedVersion(spec, runtime, batcher, stats)

    async def _retire(self, versions) -> None:
        versions = list(versions)
        if versions:
            await asyncio.gather(*(v.batcher.stop(drain=True) for v in versions), return_exceptions=True)
