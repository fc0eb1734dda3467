"""Dynamic batching of inference requests for one served model.

Requests wait in a bounded FIFO queue (bounded in samples). One collector task forms batches of whole
requests, counting samples: a batch runs once it holds ``max_batch_size`` samples or once
``max_queue_delay_s`` has passed since its first request arrived. The model's synchronous ``run_batch`` runs
in an executor, at most ``instances`` batches at a time. Every request gets one future; cancelled and expired
requests are dropped before the run, a failed run fails exactly the futures of its batch, and results are
set only on futures that are not done yet.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cnnserve.server.stats import ModelStats
from cnnserve.service.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServingError, Unavailable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
RunBatch = Callable[[Tensors], Tensors]


class BatchFailed(ServingError):
    """The model run of a batch failed (exception in ``run_batch`` or malformed outputs): status INTERNAL.

    The original exception is the ``__cause__``; the transport layer logs it and answers INTERNAL without
    echoing the text to the client.
    """


@dataclass(eq=False)
class _Request:
    inputs: Tensors
    n: int
    future: asyncio.Future
    deadline: float | None
    arrival: float  # loop.time() at submit: starts the batch timer
    submitted_ns: int  # time.monotonic_ns() at submit: for durations
    queued: bool = True


@dataclass
class _BatchOutput:
    outputs: list[Tensors]
    input_ns: int
    infer_ns: int
    output_ns: int


def _split_outputs(outputs: Tensors, counts: Sequence[int], name: str, batch_dimension: bool) -> list[Tensors]:
    """Slice the batch outputs back per request, after checking each output holds one row per sample."""
    total = sum(counts)
    if not isinstance(outputs, dict):
        kind = type(outputs).__name__
        raise BatchFailed(f"model {name}: run_batch returned {kind}, expected a dict of arrays")
    if not batch_dimension:
        return [outputs]  # one request of one sample, its tensors as the model returned them
    for key, value in outputs.items():
        rows = value.shape[0] if getattr(value, "ndim", 0) >= 1 else None
        if rows != total:
            raise BatchFailed(
                f"model {name}: output {key!r} has first dimension {rows}, expected {total} (the batch's sample count)"
            )
    if len(counts) == 1:
        return [outputs]
    split, offset = [], 0
    for n in counts:
        split.append({key: value[offset : offset + n] for key, value in outputs.items()})
        offset += n
    return split


def _run_job(
    run_batch: RunBatch, name: str, inputs: list[Tensors], counts: list[int], batch_dimension: bool = True
) -> _BatchOutput:
    """Executor job: concatenate, run, split, timing each step (compute_input / infer / output)."""
    t0 = time.monotonic_ns()
    if len(inputs) == 1:
        batch = inputs[0]
    else:
        batch = {key: np.concatenate([one[key] for one in inputs]) for key in inputs[0]}
    t1 = time.monotonic_ns()
    outputs = run_batch(batch)
    t2 = time.monotonic_ns()
    split = _split_outputs(outputs, counts, name, batch_dimension)
    t3 = time.monotonic_ns()
    return _BatchOutput(split, t1 - t0, t2 - t1, t3 - t2)


def warmup_sizes(max_batch_size: int) -> list[int]:
    """Every batch size the batcher can form, 1..max_batch_size: a batch counts whole requests, so any size
    can occur, and on a GPU each new shape pays its kernel selection on its first run."""
    return list(range(1, max_batch_size + 1))


class DynamicBatcher:
    """Batches requests for one model and runs them through a synchronous ``run_batch`` in an executor.

    ``run_batch`` takes and returns a dict of arrays whose first dimension is the batch's sample count.
    Batch and queue sizes count samples, not requests. ``batching=False`` runs every request alone (still
    through the queue and the ``instances`` limit). ``batch_dimension=False`` is for a model without one
    (Triton's max_batch_size 0): every request is one sample whose tensors reach ``run_batch`` as they are, and
    runs alone. Create the batcher anywhere; call ``start()`` inside the running loop before ``submit()``.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        name: str,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        stats: ModelStats,
        executor: concurrent.futures.Executor | None = None,
        instances: int = 1,
        batching: bool = True,
        preferred_batch_size: int = 0,
        batch_dimension: bool = True,
    ) -> None:
        if max_batch_size < 1 or instances < 1 or max_queue_size < 1 or max_queue_delay_s < 0:
            raise ValueError(
                f"model {name}: need max_batch_size, instances, max_queue_size >= 1, delay >= 0; "
                f"received max_batch_size={max_batch_size}, instances={instances}, "
                f"max_queue_size={max_queue_size}, max_queue_delay_s={max_queue_delay_s}"
            )
        self.name = name
        self.max_batch_size = max_batch_size
        # A batch is dispatched as soon as it holds this many samples (Triton's preferred_batch_size): on a
        # CPU, moderate batches are often faster per image than the largest one the model accepts.
        self.target_batch_size = (
            min(preferred_batch_size, max_batch_size) if preferred_batch_size > 0 else max_batch_size
        )
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.instances = instances
        self.batch_dimension = batch_dimension
        self.batching = batching and batch_dimension
        self.stats = stats
        self._run_batch = run_batch
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"batcher-{name}"
        )
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_samples = 0
        self._forming = 0
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._collector: asyncio.Task | None = None
        self._running: dict[asyncio.Task, list[_Request]] = {}  # strong references to in-flight batches
        self._closing = False
        self._aborting = False

    @property
    def queued_samples(self) -> int:
        """Samples waiting to run, the batch being formed included; ``max_queue_size`` bounds this."""
        return self._queued_samples

    @property
    def forming_samples(self) -> int:
        """Samples taken into the batch being formed (waiting for company or for its timer)."""
        return self._forming

    @property
    def in_flight(self) -> int:
        """Batches executing now (at most ``instances``)."""
        return len(self._running)

    async def start(self) -> None:
        """Create the queue primitives and the collector task in the running loop."""
        if self._collector is not None:
            raise RuntimeError(f"model {self.name}: batcher already started")
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.instances)
        self._collector = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")
        self._collector.add_done_callback(self._collector_done)

    async def submit(self, inputs: Tensors, *, deadline: float | None = None) -> Tensors:
        """Queue one request and wait for its outputs (first dimension = the request's sample count).

        ``deadline`` is absolute, in ``loop.time()`` units. Raises ResourceExhausted (queue full),
        DeadlineExceeded, Unavailable (not started or shutting down), BatchFailed (the model run failed) or
        another ServingError raised by ``run_batch``. Cancelling the caller drops the request.
        """
        if self._collector is None or self._closing:
            state = "not started" if self._collector is None else "shutting down"
            raise Unavailable(f"model {self.name} is {state}")
        n = self.sample_count(inputs)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline is not None and deadline <= now:
            self.stats.expired += 1
            raise DeadlineExceeded(f"model {self.name}: deadline passed {now - deadline:.3f}s before submit")
        if self._queued_samples + n > self.max_queue_size:
            self.stats.rejected += 1
            raise ResourceExhausted(
                f"model {self.name}: queue full: queued {self._queued_samples} samples, limit "
                f"{self.max_queue_size}; cannot add a request of {n} samples; retry with backoff"
            )
        request = _Request(inputs, n, loop.create_future(), deadline, now, time.monotonic_ns())
        request.future.add_done_callback(lambda _fut: self._settled(request))  # frees capacity if abandoned
        self._queue.append(request)
        self._queued_samples += n
        self.stats.queue_depth = self._queued_samples
        self._arrived.set()
        if deadline is None:
            return await request.future
        # One timer per request, not asyncio.wait_for: that adds a waiter future and an extra loop turn to
        # every answer, a visible share of the request path at thousands of requests per second.
        timer = loop.call_at(deadline, self._expire, request, deadline - now)
        try:
            return await request.future
        finally:
            timer.cancel()

    def sample_count(self, inputs: Tensors) -> int:
        """The request's sample count: the common first dimension of its inputs (1 without a batch dimension)."""
        if not self.batch_dimension:
            return 1
        counts = {key: (value.shape[0] if value.ndim else 0) for key, value in inputs.items()}
        if not counts or len(set(counts.values())) != 1:
            raise InvalidArgument(
                f"model {self.name}: inputs must share one first (batch) dimension; received first dimensions {counts}"
            )
        return self.check_samples(next(iter(counts.values())))

    def check_samples(self, n: int) -> int:
        """The one rule on a request's size: 1 to max_batch_size samples (InvalidArgument otherwise)."""
        if not 1 <= n <= self.max_batch_size:
            raise InvalidArgument(
                f"model {self.name}: request holds {n} samples, expected 1 to {self.max_batch_size} "
                f"(max_batch_size {self.max_batch_size})"
            )
        return n

    async def stop(self, *, drain: bool = True) -> None:
        """Refuse new requests; finish queued and in-flight work (``drain``) or fail it with Unavailable.

        Either way, returns only after running ``run_batch`` calls have returned, so the model session can be
        closed afterwards. Idempotent.
        """
        self._closing = True
        if not drain:
            self._aborting = True
            error = Unavailable(f"model {self.name} is shutting down; request not run")
            self._fail_queued(error)
            for batch in self._running.values():
                for request in batch:
                    self._fail(request, error)
        if self._collector is not None:  # asyncio.wait, unlike gather, never cancels what it waits for
            self._arrived.set()
            await asyncio.wait({self._collector})
        while self._running:
            await asyncio.wait(set(self._running))
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    async def warmup(self, example: Tensors, sizes: Sequence[int] | None = None) -> list[int]:
        """Run ``run_batch`` directly (in the executor, not through the queue) once per batch size.

        ``example`` holds at least one sample; its first sample is repeated to each size. ``sizes`` defaults
        to ``warmup_sizes(max_batch_size)``. Outputs are checked like real batches (BatchFailed if malformed);
        nothing is counted in the statistics. Returns the sizes run.
        """
        loop = asyncio.get_running_loop()
        if not self.batch_dimension:
            await loop.run_in_executor(self._executor, _run_job, self._run_batch, self.name, [example], [1], False)
            return [1]
        sizes = list(sizes) if sizes is not None else warmup_sizes(self.max_batch_size)
        for size in sizes:
            batch = {key: np.repeat(value[:1], size, axis=0) for key, value in example.items()}
            await loop.run_in_executor(self._executor, _run_job, self._run_batch, self.name, [batch], [size])
        return sizes

    # --- collector -------------------------------------------------------------------------------------

    async def _collect(self) -> None:
        """Form batches while a slot is free; exit once closing and the queue is empty."""
        while True:
            await self._slots.acquire()
            batch: list[_Request] = []
            try:
                await self._fill(batch)
            except BaseException:  # cancelled (loop torn down): answer what this batch already holds
                self._slots.release()
                for request in batch:
                    self._fail(request, Unavailable(f"model {self.name} is shutting down"))
                raise
            finally:
                self._forming = 0
            if not batch:
                self._slots.release()
                return
            for request in batch:
                self._unqueue(request)  # dispatched: no longer counts against the queue bound
            task = asyncio.create_task(self._execute(batch))
            self._running[task] = batch
            task.add_done_callback(self._batch_done)

    async def _fill(self, batch: list[_Request]) -> None:
        """Take whole live requests in FIFO order until the batch is full, its timer expires or we close.

        Leaves ``batch`` empty only when closing with an empty queue.
        """
        loop = asyncio.get_running_loop()
        total = 0
        timer_end = 0.0
        while True:
            request = self._peek_live(loop.time())
            if request is not None:
                if batch and total + request.n > self.target_batch_size:
                    return  # never split a request: it starts the next batch
                self._queue.popleft()
                if not batch:
                    timer_end = request.arrival + self.max_queue_delay_s
                batch.append(request)
                total += request.n
                self._forming = total
                if not self.batching or total >= self.target_batch_size:
                    return
                continue
            if self._closing:
                return
            self._arrived.clear()
            if not batch:
                await self._arrived.wait()
                continue
            if timer_end <= loop.time():
                return
            # The batch timer sets the same event as an arrival (no wait_for: it would wrap the wait in a new
            # task on every arrival); after a wake-up the loop takes what arrived or finds the timer expired.
            timer = loop.call_at(timer_end, self._arrived.set)
            try:
                await self._arrived.wait()
            finally:
                timer.cancel()

    def _peek_live(self, now: float) -> _Request | None:
        """Drop cancelled and expired requests at the head of the queue; return the first live one."""
        while self._queue:
            request = self._queue[0]
            if not self._is_dead(request, now):
                return request
            self._queue.popleft()
            self._unqueue(request)
        return None

    def _collector_done(self, task: asyncio.Task) -> None:
        """If the collector ever dies, refuse new work and fail the queue rather than let futures hang."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("model %s: batch collector died", self.name, exc_info=task.exception())
        self._closing = True
        self._fail_queued(Unavailable(f"model {self.name}: batcher failed; request not run"))

    # --- execution -------------------------------------------------------------------------------------

    async def _execute(self, batch: list[_Request]) -> None:
        """Run one batch in the executor and answer each of its futures; never raises."""
        try:
            loop = asyncio.get_running_loop()
            live = [request for request in batch if not self._is_dead(request, loop.time())]
            if self._aborting:
                for request in live:
                    self._fail(request, Unavailable(f"model {self.name} is shutting down; request not run"))
                return
            if not live:
                return
            start_ns = time.monotonic_ns()
            counts = [request.n for request in live]
            try:
                inputs = [r.inputs for r in live]
                result = await loop.run_in_executor(
                    self._executor, _run_job, self._run_batch, self.name, inputs, counts, self.batch_dimension
                )
            except asyncio.CancelledError:
                raise  # answered by _batch_done
            except ServingError as exc:
                log.warning("model %s: batch of %d samples failed: %s", self.name, sum(counts), exc)
                for request in live:
                    self._fail(request, exc)
                return
            except Exception as exc:
                log.error("model %s: batch of %d samples failed", self.name, sum(counts), exc_info=exc)
                error = _wrap(exc, self.name, counts)
                for request in live:
                    self._fail(request, error)
                return
            self.stats.record_execution(sum(counts), result.input_ns, result.infer_ns, result.output_ns)
            end_ns = time.monotonic_ns()
            for request, outputs in zip(live, result.outputs, strict=True):
                if request.future.done():
                    continue  # abandoned while running: counted when its caller left
                request.future.set_result(outputs)
                self.stats.record_success(
                    end_ns - request.submitted_ns,
                    start_ns - request.submitted_ns,
                    result.input_ns,
                    result.infer_ns,
                    result.output_ns,
                )
        finally:
            self._slots.release()

    def _batch_done(self, task: asyncio.Task) -> None:
        """Forget the batch; answer any request still pending (only after a bug or a torn-down loop)."""
        batch = self._running.pop(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("model %s: batch task failed", self.name, exc_info=task.exception())
        for request in batch:
            if not request.future.done():  # answered already, as every request is unless something broke
                self._fail(request, Unavailable(f"model {self.name}: batch was not completed"))

    # --- bookkeeping -----------------------------------------------------------------------------------

    def _is_dead(self, request: _Request, now: float) -> bool:
        """True if the request must not run: its caller left or its deadline passed (then it is answered)."""
        if request.future.done():
            return True  # abandoned: counted when its caller left
        if request.deadline is not None and request.deadline <= now:
            self._fail(request, DeadlineExceeded(f"model {self.name}: deadline passed while queued"))
            self.stats.expired += 1
            return True
        return False

    def _expire(self, request: _Request, budget: float) -> None:
        """The request's deadline passed before its answer: answer DeadlineExceeded (if still unanswered)."""
        if not request.future.done():
            self._fail(
                request, DeadlineExceeded(f"model {self.name}: deadline of {budget:.3f}s passed before the answer")
            )
            self.stats.expired += 1

    def _settled(self, request: _Request) -> None:
        """The request's future is done: release its capacity; if its caller gave up, count that now."""
        self._unqueue(request)
        if request.future.cancelled():
            self._count_abandoned(request, asyncio.get_running_loop().time())

    def _count_abandoned(self, request: _Request, now: float) -> None:
        """Count a request whose caller gave up (cancelled, or timed out) before we answered it."""
        # gRPC cancels a call at its deadline by its own clock, a moment before ours: within 50 ms is expiry.
        if request.deadline is not None and request.deadline <= now + 0.05:
            self.stats.expired += 1
            self.stats.fail.add(time.monotonic_ns() - request.submitted_ns)
        else:
            self.stats.cancelled += 1

    def _fail(self, request: _Request, error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
            self.stats.fail.add(time.monotonic_ns() - request.submitted_ns)

    def _fail_queued(self, error: ServingError) -> None:
        """Answer every queued request with ``error`` (shutdown without draining, or a dead collector)."""
        while self._queue:
            request = self._queue.popleft()
            self._unqueue(request)
            self._fail(request, error)

    def _unqueue(self, request: _Request) -> None:
        """Release the request's queue capacity once (dispatched, dropped, or abandoned)."""
        if request.queued:
            request.queued = False
            self._queued_samples -= request.n
            self.stats.queue_depth = self._queued_samples


def _wrap(exc: BaseException, name: str, counts: list[int]) -> BatchFailed:
    error = BatchFailed(
        f"model {name}: batch of {len(counts)} requests ({sum(counts)} samples) failed: {type(exc).__name__}"
    )
    error.__cause__ = exc
    return error
