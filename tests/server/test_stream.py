"""ModelStreamInfer like unary ModelInfer: requests of one stream batch, the stream's deadline is theirs, and
failures are answered and counted as unary calls' are."""

from __future__ import annotations

import re
import threading

import grpc
import pytest

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.inference import InferenceHandler
from support import wait_until


def _request(model: str, id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=id)
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(bytes(784))
    return request


def _stub(server) -> tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.address)
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def test_requests_of_one_stream_batch(server):
    """16 requests of one stream on a model that runs only full batches of 8: all answered, in 2 executions
    (ModelStatistics), which only requests in flight together can give."""
    channel, stub = _stub(server)
    with channel:
        answers = list(stub.ModelStreamInfer(iter([_request("slow", str(i)) for i in range(16)]), timeout=120))
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="slow"), timeout=30).model_stats[0]
    assert sorted(int(a.infer_response.id) for a in answers if not a.error_message) == list(range(16))
    assert stats.inference_count == 16
    assert stats.execution_count == 2 < stats.inference_count


def test_the_streams_deadline_is_its_requests_deadline(server):
    """A request queued on a stream whose deadline passes expires in the queue (counted as expired, never
    computed), as a unary call's would; without the deadline it would only be cancelled."""
    channel, stub = _stub(server)
    with channel, pytest.raises(grpc.RpcError) as err:
        list(stub.ModelStreamInfer(iter([_request("slow")]), timeout=1))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    slow = server.server.models.get("slow", "")
    wait_until(lambda: slow.stats.expired == 1, "the request expires in the queue")
    assert slow.stats.execution_count == 0


def test_stream_failures_are_answered_and_counted_as_unary_ones(server, monkeypatch):
    """The same message as ModelInfer (NOT_FOUND; INTERNAL with a request id), the request's id and the code
    beside it, and the count under that code."""
    channel, stub = _stub(server)
    with channel:
        with pytest.raises(grpc.RpcError) as unary:
            stub.ModelInfer(_request("nope"), timeout=30)
        (answer,) = stub.ModelStreamInfer(iter([_request("nope", "r1")]), timeout=30)
        assert answer.error_message == unary.value.details()
        assert answer.infer_response.id == "r1" and answer.infer_response.model_name == "nope"
        assert answer.infer_response.parameters["code"].string_param == "NOT_FOUND"

        def broken(*args, **kw):
            raise RuntimeError("secret detail")

        monkeypatch.setattr(InferenceHandler, "shape_result", broken)
        with pytest.raises(grpc.RpcError) as unary:
            stub.ModelInfer(_request("tiny"), timeout=30)
        assert unary.value.code() == grpc.StatusCode.INTERNAL
        (answer,) = stub.ModelStreamInfer(iter([_request("tiny", "r2")]), timeout=30)
    internal = re.compile(r"internal error; request id [0-9a-f]{12} is in the server log")
    assert internal.fullmatch(unary.value.details()) and internal.fullmatch(answer.error_message)
    assert "secret" not in answer.error_message
    assert answer.infer_response.id == "r2"
    assert answer.infer_response.parameters["code"].string_param == "INTERNAL"
    metrics = server.server.metrics
    assert metrics.count("ModelStreamInfer", "NOT_FOUND") == 1
    assert metrics.count("ModelStreamInfer", "INTERNAL") == 1


def test_requests_of_a_stream_its_caller_left_are_counted_cancelled(server):
    """Two requests waiting in a batch that never fills; the caller cancels the stream: both counted CANCELLED
    (as a cancelled unary call is), and nothing is left in flight."""
    channel, stub = _stub(server)
    sent = threading.Event()

    def requests():
        yield _request("slow")
        yield _request("slow")
        sent.set()
        threading.Event().wait(120)  # keep the stream open until it is cancelled

    with channel:
        call = stub.ModelStreamInfer(requests(), timeout=120)
        sent.wait(30)
        wait_until(lambda: server.server.models.get("slow", "").batcher.queued_samples == 2, "both queued")
        call.cancel()
        wait_until(lambda: server.server.metrics.count("ModelStreamInfer", "CANCELLED") == 2, "both counted")
    wait_until(lambda: server.server.gate.inflight == 0, "the stream leaves admission")
