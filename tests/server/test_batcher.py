"""Unit tests of the dynamic batcher with a fake model whose batches finish only when the test says so.

No time-based sleeps: the batch delay is huge so only size (or stop) closes a batch; the model reports each
batch start on an asyncio queue and blocks until the test releases it. Batch formation is read from the
model's own record of the rows it received and from the batcher's statistics. ``spawn`` yields one
scheduler step, enough for ``submit()`` to queue its request (it queues before its first await).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading

import numpy as np
import pytest

from cnnserve.server.batcher import BatchFailed, DynamicBatcher, warmup_sizes
from cnnserve.server.stats import ModelStats
from cnnserve.service.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

pytestmark = pytest.mark.timeout(20)

FAIL = -1.0  # a row with this value makes run_batch raise ValueError: the whole batch fails
REFUSE = -2.0  # ... raise InvalidArgument, a ServingError that must pass through unchanged
SHORT = -3.0  # ... return one row too few


class FakeModel:
    """A synchronous run_batch that records its batches and blocks until released."""

    def __init__(self, gated: bool = True) -> None:
        self.loop = asyncio.get_running_loop()
        self.started: asyncio.Queue[tuple[float, ...]] = asyncio.Queue()
        self.batches: list[tuple[float, ...]] = []  # first column of each batch, in call order
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()
        self._permits = threading.Semaphore(0)
        if not gated:
            self.release(1000)

    def release(self, count: int = 1) -> None:
        """Let ``count`` batches (running now or later) finish."""
        for _ in range(count):
            self._permits.release()

    def run_batch(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        rows = tuple(float(v) for v in x[:, 0])
        with self._lock:
            self.batches.append(rows)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.loop.call_soon_threadsafe(self.started.put_nowait, rows)
        released = self._permits.acquire(timeout=15)  # bounded, so a broken test cannot strand the thread
        with self._lock:
            self.running -= 1
        assert released, "test never released the batch"
        if FAIL in rows:
            raise ValueError("sentinel row")
        if REFUSE in rows:
            raise InvalidArgument("sentinel refused")
        y = x * 2
        return {"y": y[:-1] if SHORT in rows else y}


def req(value: float, n: int = 1) -> dict[str, np.ndarray]:
    """A request of ``n`` samples whose every element is ``value`` (so its rows can be recognised)."""
    return {"x": np.full((n, 2), value, dtype=np.float32)}


async def spawn(batcher: DynamicBatcher, inputs: dict[str, np.ndarray], **kwargs) -> asyncio.Task:
    """Start a submit as a task and give it one scheduler step to queue its request."""
    task = asyncio.create_task(batcher.submit(inputs, **kwargs))
    await asyncio.sleep(0)
    return task


async def until(condition, steps: int = 100) -> None:
    """Yield scheduler steps (not time) until ``condition()`` holds; fail if it never does."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@contextlib.asynccontextmanager
async def serving(model: FakeModel, **overrides):
    settings = dict(
        name="digits",
        max_batch_size=4,
        max_queue_delay_s=3600.0,
        max_queue_size=64,
        stats=ModelStats(name="digits"),
        instances=1,
    )
    settings.update(overrides)
    batcher = DynamicBatcher(model.run_batch, **settings)
    await batcher.start()
    try:
        yield batcher
    finally:
        model.release(1000)
        await batcher.stop(drain=False)


def asynchronous(test):
    """Run an ``async def`` test in its own event loop (the batcher is created inside it)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


@asynchronous
async def test_batch_runs_when_full_and_each_request_gets_its_own_rows():
    model = FakeModel()
    async with serving(model, max_batch_size=4) as batcher:
        tasks = [await spawn(batcher, req(v)) for v in (1, 2, 3, 4)]
        assert await model.started.get() == (1, 2, 3, 4)
        model.release()
        results = await asyncio.gather(*tasks)
        for value, out in zip((1, 2, 3, 4), results, strict=True):
            np.testing.assert_array_equal(out["y"], np.full((1, 2), 2 * value))
        stats = batcher.stats
        assert (stats.execution_count, stats.inference_count, stats.success.count) == (1, 4, 4)
        assert list(stats.batch_stats) == [4]
        assert stats.batch_stats[4].compute_infer.count == 1
        # per-request compute time is the batch's, added once per request (Triton's inference_stats)
        assert stats.compute_infer.count == 4
        assert stats.compute_infer.ns == 4 * stats.batch_stats[4].compute_infer.ns > 0
        assert stats.queue.count == 4


@asynchronous
async def test_an_answered_batch_builds_no_failure_for_its_requests(monkeypatch):
    """The end-of-batch sweep only fails requests left unanswered: an answered one costs no exception object."""
    import cnnserve.server.batcher as batcher_module

    built = []

    class Counted(Unavailable):
        def __init__(self, message: str) -> None:
            built.append(message)
            super().__init__(message)

    monkeypatch.setattr(batcher_module, "Unavailable", Counted)
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=2) as batcher:
        results = await asyncio.gather(batcher.submit(req(1)), batcher.submit(req(2)))
        assert [out["y"][0, 0] for out in results] == [2, 4]
        await until(lambda: not batcher.in_flight)
        assert built == []


@asynchronous
async def test_batch_size_counts_samples_and_never_splits_a_request():
    model = FakeModel()
    async with serving(model, max_batch_size=4) as batcher:
        sizes = {1: 3, 2: 2, 3: 2, 4: 1}  # value -> samples
        tasks = {v: await spawn(batcher, req(v, n)) for v, n in sizes.items()}
        assert await model.started.get() == (1, 1, 1)  # 3 + 2 > 4: the 2-sample request waits
        assert batcher.queued_samples == 5
        model.release()
        assert await model.started.get() == (2, 2, 3, 3)  # full at 4 samples
        model.release()
        await asyncio.gather(tasks[1], tasks[2], tasks[3])
        await until(lambda: batcher.forming_samples == 1)  # taken into the next batch ...
        assert not tasks[4].done()  # 1 sample, huge delay: waits for company
        model.release()
        await batcher.stop(drain=True)  # flushes the partial batch
        out = await tasks[4]
        assert out["y"].shape == (1, 2)
        for v, n in sizes.items():
            np.testing.assert_array_equal(tasks[v].result()["y"], np.full((n, 2), 2 * v))
        assert model.batches == [(1, 1, 1), (2, 2, 3, 3), (4,)]
        assert {s: b.compute_infer.count for s, b in batcher.stats.batch_stats.items()} == {
            3: 1,
            4: 1,
            1: 1,
        }
        assert batcher.stats.inference_count == 8


@asynchronous
async def test_queue_delay_runs_a_partial_batch():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=4, max_queue_delay_s=0.01) as batcher:
        out = await batcher.submit(req(1, 2))  # never full: only the timer can start it
        assert out["y"].shape == (2, 2)
        assert list(batcher.stats.batch_stats) == [2]


@asynchronous
async def test_failing_run_fails_its_whole_batch_and_only_it():
    model = FakeModel()
    async with serving(model, max_batch_size=2) as batcher:
        first = [await spawn(batcher, req(v)) for v in (5, FAIL)]
        second = [await spawn(batcher, req(v)) for v in (6, 7)]
        assert await model.started.get() == (5, FAIL)
        model.release(2)
        for task in first:
            with pytest.raises(BatchFailed) as info:
                await task
            assert isinstance(info.value.__cause__, ValueError)
        assert await model.started.get() == (6, 7)  # the batcher kept serving
        results = await asyncio.gather(*second)
        assert [r["y"][0, 0] for r in results] == [12, 14]
        stats = batcher.stats
        assert (stats.fail.count, stats.success.count, stats.execution_count) == (2, 2, 1)


@asynchronous
async def test_serving_error_from_the_model_passes_through():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=1) as batcher:
        with pytest.raises(InvalidArgument, match="sentinel refused"):
            await batcher.submit(req(REFUSE))
        assert (await batcher.submit(req(8)))["y"][0, 0] == 16


@asynchronous
async def test_output_rows_are_counted_against_input_samples():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=3) as batcher:
        tasks = [await spawn(batcher, req(v, n)) for v, n in ((1, 1), (SHORT, 2))]
        for task in tasks:
            with pytest.raises(BatchFailed, match="first dimension 2, expected 3"):
                await task
        assert (await batcher.submit(req(2, 3)))["y"].shape == (3, 2)
        assert batcher.stats.fail.count == 2


@asynchronous
async def test_full_queue_rejects_at_once_and_neighbours_complete():
    model = FakeModel()
    async with serving(model, max_batch_size=2, max_queue_size=4) as batcher:
        running = await spawn(batcher, req(1, 2))
        assert await model.started.get() == (1, 1)
        queued = [await spawn(batcher, req(v, 2)) for v in (2, 3)]
        assert batcher.queued_samples == 4
        with pytest.raises(ResourceExhausted, match=r"queue full: queued 4 samples, limit 4") as info:
            await batcher.submit(req(4))
        assert "digits" in info.value.message and info.value.message.endswith("; retry with backoff")
        assert batcher.stats.rejected == 1
        model.release(3)
        results = await asyncio.gather(running, *queued)
        assert [r["y"][0, 0] for r in results] == [2, 4, 6]
        assert model.batches == [(1, 1), (2, 2), (3, 3)]


@asynchronous
async def test_the_batch_being_formed_counts_against_the_queue_bound():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=8, max_queue_size=2) as batcher:
        waiting = [await spawn(batcher, req(v)) for v in (1, 2)]
        await until(lambda: batcher.forming_samples == 2)
        assert batcher.queued_samples == 2
        with pytest.raises(ResourceExhausted, match="queued 2 samples, limit 2"):
            await batcher.submit(req(3))
        await batcher.stop(drain=True)
        assert [t.result()["y"][0, 0] for t in waiting] == [2, 4]
        assert batcher.queued_samples == 0
        assert model.batches == [(1, 2)]


@asynchronous
async def test_abandoned_request_frees_its_queue_capacity():
    model = FakeModel()
    async with serving(model, max_batch_size=2, max_queue_size=2) as batcher:
        running = await spawn(batcher, req(1, 2))
        await model.started.get()
        waiting = await spawn(batcher, req(2, 2))
        with pytest.raises(ResourceExhausted):
            await batcher.submit(req(3))
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await until(lambda: batcher.queued_samples == 0)  # the future's done-callback frees it
        accepted = await spawn(batcher, req(4, 2))
        model.release(2)
        assert (await accepted)["y"][0, 0] == 8
        await running
        assert model.batches == [(1, 1), (4, 4)]
        assert batcher.stats.cancelled == 1


@asynchronous
async def test_expired_deadline_is_refused_before_compute():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=1) as batcher:
        loop = asyncio.get_running_loop()
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(req(9), deadline=loop.time() - 1)
        assert model.batches == []
        assert batcher.stats.expired == 1


@asynchronous
async def test_request_whose_deadline_passes_in_the_queue_is_dropped():
    model = FakeModel()
    async with serving(model, max_batch_size=1) as batcher:
        loop = asyncio.get_running_loop()
        running = await spawn(batcher, req(1))
        await model.started.get()
        late = await spawn(batcher, req(2), deadline=loop.time() + 0.05)
        on_time = await spawn(batcher, req(3), deadline=loop.time() + 3600)
        with pytest.raises(DeadlineExceeded):
            await late  # the caller gets its answer at the deadline, while batch 1 still runs
        model.release(2)
        await asyncio.gather(running, on_time)
        assert model.batches == [(1,), (3,)]  # compute never saw the expired request
        assert batcher.stats.expired == 1
        assert batcher.stats.fail.count == 1


@asynchronous
async def test_cancelled_request_is_dropped_from_its_batch():
    model = FakeModel()
    async with serving(model, max_batch_size=3) as batcher:
        gone = await spawn(batcher, req(1))
        await until(lambda: batcher.forming_samples == 1)  # taken into the forming batch
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        stay = [await spawn(batcher, req(v)) for v in (2, 3)]  # 1 + 2 samples: the batch is full
        assert await model.started.get() == (2, 3)
        model.release()
        assert [r["y"][0, 0] for r in await asyncio.gather(*stay)] == [4, 6]
        assert batcher.stats.cancelled == 1
        assert list(batcher.stats.batch_stats) == [2]


async def stop_with_three_queued(batcher: DynamicBatcher, model: FakeModel, drain: bool):
    """Three one-sample requests (the first running), then ``stop(drain)``; returns their tasks and the stop."""
    tasks = [await spawn(batcher, req(v)) for v in (1, 2, 3)]
    await model.started.get()
    return tasks, asyncio.create_task(batcher.stop(drain=drain))


@asynchronous
async def test_stop_with_drain_finishes_queued_work_then_refuses():
    model = FakeModel()
    async with serving(model, max_batch_size=1) as batcher:
        tasks, stopping = await stop_with_three_queued(batcher, model, drain=True)
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="digits is shutting down"):
            await batcher.submit(req(4))
        model.release(3)
        await stopping
        assert [t.result()["y"][0, 0] for t in tasks] == [2, 4, 6]
        assert model.batches == [(1,), (2,), (3,)]


@asynchronous
async def test_stop_without_drain_fails_queued_and_running_requests():
    model = FakeModel()
    async with serving(model, max_batch_size=1) as batcher:
        tasks, stopping = await stop_with_three_queued(batcher, model, drain=False)
        for task in tasks:  # answered before the running batch returns
            with pytest.raises(Unavailable, match="shutting down"):
                await task
        assert not stopping.done()  # stop waits for the running model call
        model.release()
        await stopping
        assert model.batches == [(1,)]
        assert batcher.stats.fail.count == 3
        with pytest.raises(Unavailable):
            await batcher.submit(req(4))


@asynchronous
async def test_without_batching_each_request_runs_alone():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=4, batching=False) as batcher:
        tasks = [await spawn(batcher, req(v, n)) for v, n in ((1, 1), (2, 2), (3, 1), (4, 1))]
        await asyncio.gather(*tasks)
        assert model.batches == [(1,), (2, 2), (3,), (4,)]
        assert {s: b.compute_infer.count for s, b in batcher.stats.batch_stats.items()} == {1: 3, 2: 1}
        assert batcher.stats.execution_count == 4


@asynchronous
async def test_at_most_instances_batches_run_at_once():
    model = FakeModel()
    wide = concurrent.futures.ThreadPoolExecutor(max_workers=8)  # threads are not the limit here
    try:
        async with serving(model, max_batch_size=1, instances=2, executor=wide) as batcher:
            tasks = [await spawn(batcher, req(v)) for v in (1, 2, 3, 4, 5)]
            assert {await model.started.get(), await model.started.get()} == {(1,), (2,)}
            assert batcher.in_flight == 2
            assert batcher.queued_samples == 3
            for expected in ((3,), (4,), (5,)):
                model.release()
                assert await model.started.get() == expected
            model.release(2)
            await asyncio.gather(*tasks)
            assert model.max_running == 2
    finally:
        wide.shutdown()


@asynchronous
async def test_invalid_requests_are_refused_before_the_queue():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=2) as batcher:
        with pytest.raises(InvalidArgument, match="3 samples, expected 1 to 2"):
            await batcher.submit(req(1, 3))
        with pytest.raises(InvalidArgument, match="first"):
            await batcher.submit({"x": np.zeros((1, 2)), "z": np.zeros((2, 2))})
        assert model.batches == []


@asynchronous
async def test_submit_before_start_is_unavailable():
    model = FakeModel(gated=False)
    batcher = DynamicBatcher(
        model.run_batch,
        name="digits",
        max_batch_size=1,
        max_queue_delay_s=0.0,
        max_queue_size=1,
        stats=ModelStats(),
    )
    with pytest.raises(Unavailable, match="not started"):
        await batcher.submit(req(1))
    await batcher.stop()


@asynchronous
async def test_warmup_runs_each_size_outside_the_statistics():
    model = FakeModel(gated=False)
    async with serving(model, max_batch_size=5) as batcher:
        assert await batcher.warmup(req(1)) == [1, 2, 3, 4, 5]
        assert [len(rows) for rows in model.batches] == [1, 2, 3, 4, 5]
        assert await batcher.warmup(req(1), sizes=[3]) == [3]
        assert batcher.stats.execution_count == 0
        with pytest.raises(BatchFailed, match="first dimension"):
            await batcher.warmup(req(SHORT), sizes=[2])


def test_warmup_sizes():
    assert warmup_sizes(1) == [1]
    assert warmup_sizes(8) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert warmup_sizes(64) == list(range(1, 65))


@asynchronous
async def test_preferred_batch_size_dispatches_smaller_batches_at_once():
    model = FakeModel()
    async with serving(model, max_batch_size=8, preferred_batch_size=2, instances=2) as batcher:
        tasks = [await spawn(batcher, req(float(i))) for i in range(5)]
        first = await model.started.get()
        second = await model.started.get()
        assert sorted([first, second]) == [(0.0, 1.0), (2.0, 3.0)]  # two batches of 2, delay never waited
        assert batcher.queued_samples == 1  # the fifth request waits for a partner
        model.release(2)
        for task in tasks[:4]:
            await task
        assert batcher.stats.batch_stats.keys() == {2} and batcher.stats.execution_count == 2
        # A single request larger than the preferred size still runs whole.
        big = await spawn(batcher, req(9.0, 6))
        assert await model.started.get() == (4.0,)  # the waiting one dispatches first, alone
        assert await model.started.get() == (9.0,) * 6
        model.release(2)
        await big
        await tasks[4]
