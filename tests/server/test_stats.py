"""ModelStats: Triton-shaped counters and their plain snapshot."""

from __future__ import annotations

from cnnserve.server.stats import Duration, ModelStats


def test_duration_adds_counts_and_nanoseconds():
    d = Duration()
    d.add(100)
    d.add(50, count=3)
    assert (d.count, d.ns) == (4, 150)


def test_executions_are_counted_per_batch_size_in_samples():
    s = ModelStats(name="digits", version="1")
    s.record_execution(4, input_ns=1, infer_ns=10, output_ns=2)
    s.record_execution(4, input_ns=1, infer_ns=20, output_ns=2)
    s.record_execution(1, input_ns=1, infer_ns=5, output_ns=2)
    assert (s.execution_count, s.inference_count) == (3, 9)
    assert s.batch_stats[4].compute_infer.count == 2
    assert s.batch_stats[4].compute_infer.ns == 30
    assert s.batch_stats[1].compute_infer.ns == 5
    assert s.last_inference_ms > 1_600_000_000_000  # a wall-clock timestamp in ms


def test_snapshot_uses_triton_field_names_and_plain_values():
    s = ModelStats(name="digits", version="2")
    s.record_execution(2, input_ns=3, infer_ns=7, output_ns=1)
    for _ in range(2):
        s.record_success(total_ns=20, queue_ns=5, input_ns=3, infer_ns=7, output_ns=1)
    s.fail.add(9)
    s.rejected, s.expired, s.cancelled, s.queue_depth = 1, 2, 3, 4
    snap = s.snapshot()
    assert snap["name"] == "digits" and snap["version"] == "2"
    assert (snap["inference_count"], snap["execution_count"]) == (2, 1)
    assert snap["inference_stats"]["success"] == {"count": 2, "ns": 40}
    assert snap["inference_stats"]["queue"] == {"count": 2, "ns": 10}
    assert snap["inference_stats"]["compute_infer"] == {"count": 2, "ns": 14}
    assert snap["inference_stats"]["fail"] == {"count": 1, "ns": 9}
    assert snap["batch_stats"] == [
        {
            "batch_size": 2,
            "compute_input": {"count": 1, "ns": 3},
            "compute_infer": {"count": 1, "ns": 7},
            "compute_output": {"count": 1, "ns": 1},
        }
    ]
    assert (snap["rejected"], snap["expired"], snap["cancelled"], snap["queue_depth"]) == (1, 2, 3, 4)
    snap["inference_stats"]["success"]["count"] = 99  # a copy: the live counters are untouched
    assert s.success.count == 2
