"""Admission under a burst: every call is answered OK or RESOURCE_EXHAUSTED (with the limit named), never a
bare CANCELLED from gRPC core, and every answer is counted in cnnserve_requests_total."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections import Counter

import grpc
import pytest

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc, images_pb2, images_pb2_grpc
from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from support import ServerProcess, ServerThread, wait_until, write_model


def _request(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(bytes(784))
    return request


def _burst(address: str, calls: int, channels: int) -> Counter:
    """``calls`` unary ModelInfer calls started at once over ``channels`` channels; (code, details) tallied."""

    async def run() -> Counter:
        opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in opened]
        request = _request("m")

        async def one(i: int) -> tuple[str, str]:
            try:
                await stubs[i % channels].ModelInfer(request, timeout=60)
                return "OK", ""
            except grpc.aio.AioRpcError as err:
                return err.code().name, err.details() or ""

        try:
            return Counter(await asyncio.gather(*(one(i) for i in range(calls))))
        finally:
            for c in opened:
                await c.close()

    return asyncio.run(run())


def _counted(metrics_port: int) -> Counter:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    counts: Counter = Counter()
    for code, method, value in re.findall(r'cnnserve_requests_total\{code="(\w+)",method="(\w+)"\} (\S+)', text):
        counts[(method, code)] += int(float(value))
    return counts


@pytest.fixture
def burst_server(tmp_path):
    write_model(tmp_path, "m", max_batch_size=64, delay_us=2000)
    server = ServerProcess(tmp_path).start()
    yield server
    server.terminate()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("calls,channels", [(3000, 1), (6000, 4)])
def test_a_burst_is_answered_call_by_call_and_counted(burst_server, calls, channels):
    """The issue's burst: before the fix, about a fifth of 3,000 calls on one channel came back CANCELLED."""
    tally = _burst(burst_server.address, calls, channels)
    codes = Counter()
    for (code, details), n in tally.items():
        codes[code] += n
        if code == "RESOURCE_EXHAUSTED":
            assert "retry with backoff" in details, details
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, tally
    assert sum(codes.values()) == calls
    counted = _counted(burst_server.metrics_port)
    for code, n in codes.items():
        assert counted[("ModelInfer", code)] == n, (code, counted)
    with grpc.insecure_channel(burst_server.address) as channel:  # serving, and answering, right after
        assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request("m"), timeout=30).outputs


@pytest.mark.timeout(300)
def test_gRPC_cores_pending_limit_is_what_cancels_a_burst(tmp_path):
    """The mechanism, shown with the setting turned down: gRPC core cancels calls the server has not picked
    up once more than max_pending_calls wait, and such a call reaches no servicer and no counter."""
    write_model(tmp_path, "m", max_batch_size=64, delay_us=2000)
    server = ServerProcess(tmp_path, "--max-pending-calls", "10").start()
    try:
        tally = _burst(server.address, 3000, 1)
        cancelled = sum(n for (code, _), n in tally.items() if code == "CANCELLED")
        assert cancelled > 0, tally
        counted = _counted(server.metrics_port)
        assert sum(counted.values()) == 3000 - cancelled, (tally, counted)
    finally:
        server.terminate()


def test_admission_limit_refuses_each_work_call_with_the_limit_named(tmp_path):
    """With max_concurrent_calls=4 and four calls waiting in a batch that never fills, every further work call
    (ModelInfer, ModelStreamInfer, Classify, the explainer proxy) is refused RESOURCE_EXHAUSTED at once;
    metadata and health still answer, and once the waiting calls leave, inference is admitted again."""

    write_model(tmp_path, "slow", max_batch_size=8, delay_us=60_000_000)  # only a full batch of 8 runs
    write_model(tmp_path, "m")
    thread = ServerThread(tmp_path, max_concurrent_calls=4).start()
    channel = grpc.insecure_channel(thread.address)
    try:
        inference = pb_grpc.GRPCInferenceServiceStub(channel)
        waiting = [inference.ModelInfer.future(_request("slow"), timeout=120) for _ in range(4)]
        wait_until(lambda: thread.server.gate.inflight == 4, "four calls in flight")
        refused = {
            "ModelInfer": lambda: inference.ModelInfer(_request("m"), timeout=10),
            "ModelStreamInfer": lambda: list(inference.ModelStreamInfer(iter([_request("m")]), timeout=10)),
            "Classify": lambda: images_pb2_grpc.ImageServiceStub(channel).Classify(
                images_pb2.ClassifyRequest(model_name="m"), timeout=10
            ),
            "ListLayers": lambda: explainer_pb2_grpc.ExplainerStub(channel).ListLayers(
                explainer_pb2.ListLayersRequest(model_name="m"), timeout=10
            ),
        }
        for name, call in refused.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, name
            details = err.value.details()
            assert "admission limit of 4 concurrent calls" in details, details
            assert "CNNSERVE_MAX_CONCURRENT_CALLS" in details and "retry with backoff" in details, details
        assert inference.ModelMetadata(pb.ModelMetadataRequest(name="m"), timeout=10).name == "m"
        counter = thread.server.metrics._requests
        for name in refused:
            assert counter.labels(name, "RESOURCE_EXHAUSTED")._value.get() == 1, name
        for future in waiting:
            future.cancel()
        wait_until(lambda: thread.server.gate.inflight == 0, "the cancelled calls leave")
        assert counter.labels("ModelInfer", "CANCELLED")._value.get() == 4
        assert inference.ModelInfer(_request("m"), timeout=30).outputs
    finally:
        channel.close()
        thread.stop()


def test_the_default_admission_limit_holds_what_the_queues_hold(tmp_path):
    """0 (the default) sizes the limit from the served models: queue bound plus running batches, at least 1024;
    it follows loads and unloads."""

    write_model(tmp_path, "a", max_batch_size=8, queue_size=3000)
    thread = ServerThread(tmp_path).start()
    try:
        assert thread.server.gate.limit == 3000 + 8
        write_model(tmp_path, "b", max_batch_size=16, queue_size=500)
        thread.call(thread.server.models.load("b"))
        assert thread.server.gate.limit == 3000 + 8 + 500 + 16
        thread.call(thread.server.models.unload("a"))
        thread.call(thread.server.models.unload("b"))
        assert thread.server.gate.limit == 1024
    finally:
        thread.stop()
