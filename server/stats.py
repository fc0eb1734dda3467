"""Per-model serving statistics, shaped like Triton's ``ModelStatistics``.

All counters are updated from the event-loop thread only (the batcher measures compute durations inside its
executor job and reports them back), so no lock is needed. ``snapshot()`` gives plain values for the
transport layer, which turns them into ``ModelStatistics`` / Prometheus metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """A count and a cumulative duration in nanoseconds (Triton's ``StatisticDuration``)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        """Add ``count`` events that took ``ns`` nanoseconds in total."""
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        """Plain values: ``{"count": ..., "ns": ...}``."""
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchSizeStats:
    """Compute durations of the model executions of one batch size; one count per execution."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Counters for one served model.

    Per request (as in Triton's ``inference_stats``): ``success`` and ``fail`` count requests with their
    duration from submit to answer; ``queue`` is the time from submit to the start of the request's batch;
    ``compute_input/infer/output`` add the durations of the request's batch once per request. ``fail`` counts
    requests that entered the queue and were answered with an error (failed batch, deadline passed in the
    queue, shutdown).

    Per execution: ``execution_count`` and ``batch_stats[batch size in samples]``.

    Outside Triton's message: ``rejected`` (queue full at submit), ``expired`` (deadline passed before an
    answer, including requests refused at submit because their deadline had already passed), ``cancelled``
    (the caller went away before an answer), and the ``queue_depth`` gauge (samples waiting now).
    """

    name: str = ""
    version: str = ""
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batch_stats: dict[int, BatchSizeStats] = field(default_factory=dict)
    rejected: int = 0
    expired: int = 0
    cancelled: int = 0
    queue_depth: int = 0

    def record_execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """Count one successful model execution of ``batch_size`` samples."""
        per_size = self.batch_stats.setdefault(batch_size, BatchSizeStats())
        per_size.compute_input.add(input_ns)
        per_size.compute_infer.add(infer_ns)
        per_size.compute_output.add(output_ns)
        self.execution_count += 1
        self.inference_count += batch_size
        self.last_inference_ms = time.time_ns() // 1_000_000  # wall clock on purpose: a timestamp

    def record_success(self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """Count one request answered with outputs."""
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def snapshot(self) -> dict:
        """Plain values, with Triton's field names where Triton has one."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": s.compute_input.as_dict(),
                    "compute_infer": s.compute_infer.as_dict(),
                    "compute_output": s.compute_output.as_dict(),
                }
                for size, s in sorted(self.batch_stats.items())
            ],
            "rejected": self.rejected,
            "expired": self.expired,
            "cancelled": self.cancelled,
            "queue_depth": self.queue_depth,
        }
