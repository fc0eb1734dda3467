"""The KServe v2 / Triton gRPC servicer: protobuf <-> plain values around the inference handler, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cnnserve import __version__
from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from cnnserve.protocol import CONTENTS_FIELD, serialize_bytes
from cnnserve.server.inference import InferenceHandler, InferRequest, InferResult, RequestedOutput
from cnnserve.server.metrics import ServerMetrics
from cnnserve.server.model_manager import ModelManager
from cnnserve.server.tensors import WireTensor
from cnnserve.service.errors import InvalidArgument, NotFound, ServingError
from cnnserve.service.rpc import Servicer, deadline_of, failure, rpc, rpc_stream

SERVER_NAME = "cnnserve"
EXTENSIONS = ["classification", "model_configuration", "model_repository", "statistics", "schedule_policy"]
_STREAM_WINDOW = 64  # requests of one stream in flight at once


def to_infer_request(msg: pb.ModelInferRequest) -> InferRequest:
    """Protobuf request -> plain request; checks the envelope (raw vs typed contents, parameters)."""
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs")
    tensors = []
    for i, t in enumerate(msg.inputs):
        typed_fields = [f.name for f, _ in t.contents.ListFields()] if t.HasField("contents") else []
        if raw and typed_fields:
            raise InvalidArgument(
                f"input {t.name!r}: has typed contents ({typed_fields[0]}) while raw_input_contents is used; "
                "send all inputs one way"
            )
        if raw:
            tensors.append(WireTensor(t.name, t.datatype, tuple(t.shape), raw=raw[i]))
            continue
        field = CONTENTS_FIELD.get(t.datatype)
        if field is None and t.datatype != "FP16":
            raise InvalidArgument(f"input {t.name!r}: unknown datatype {t.datatype!r}")
        stray = [f for f in typed_fields if f != field]
        if stray:
            raise InvalidArgument(f"input {t.name!r}: datatype {t.datatype} expects {field}, got {stray[0]}")
        typed = getattr(t.contents, field) if field and field in typed_fields else None
        tensors.append(WireTensor(t.name, t.datatype, tuple(t.shape), typed=typed))
    outputs = [RequestedOutput(o.name, _classification(o)) for o in msg.outputs]
    return InferRequest(msg.model_name, msg.model_version, msg.id, tensors, outputs)


def _classification(out: pb.ModelInferRequest.InferRequestedOutputTensor) -> int | None:
    """The integer of the ``classification`` parameter (its range is the handler's rule), None when absent."""
    if "classification" not in out.parameters:
        return None
    param = out.parameters["classification"]
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"output {out.name!r}: parameter 'classification' must be an integer, got {kind}")
    return getattr(param, kind)


def to_infer_response(result: InferResult) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=result.id)
    for out in result.outputs:
        response.outputs.add(name=out.name, datatype=out.datatype, shape=out.data.shape)
        if out.datatype == "BYTES":
            response.raw_output_contents.append(serialize_bytes(out.data.ravel().tolist()))
        else:
            response.raw_output_contents.append(out.data.tobytes())
    return response


class InferenceServicer(Servicer, pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over the model manager and the inference handler."""

    def __init__(
        self, models: ModelManager, handler: InferenceHandler, metrics: ServerMetrics, state, admission=None
    ) -> None:
        self.models = models
        self.handler = handler
        self.metrics = metrics
        self.state = state  # has .live and .ready
        self.admission = admission

    @rpc(counted=False)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.state.live)

    @rpc(counted=False)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.state.ready and self.models.ready())

    @rpc
    async def ModelReady(self, request, context):
        try:
            self.models.get(request.name, request.version)
        except NotFound:
            raise
        except ServingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.state.ready)

    @rpc(counted=False)
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    @rpc
    async def ModelMetadata(self, request, context):
        spec = self.models.get(request.name, request.version).spec
        versions = list(self.models.models[spec.name].versions)
        response = pb.ModelMetadataResponse(name=spec.name, versions=versions, platform=spec.platform)
        for t in spec.inputs:
            response.inputs.add(name=t.name, datatype=t.datatype, shape=spec.full_shape(t))
        for t in spec.outputs:
            response.outputs.add(name=t.name, datatype=t.datatype, shape=spec.full_shape(t))
        return response

    @rpc
    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.models.get(request.name, request.version).spec.config)

    @rpc
    async def ModelInfer(self, request, context):
        result = await self.handler.infer(to_infer_request(request), deadline=deadline_of(context))
        return to_infer_response(result)

    @rpc_stream
    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently (so they batch); answers come in completion order.

        Each request is handled as a ModelInfer call would be: the stream's deadline is its deadline (it is
        dropped before compute once that passed), and a failure gets the status unary calls get and is
        counted under that code. A failed request is answered in the stream, which stays open for the others:
        ``error_message`` is exactly the message a ModelInfer call would get (INTERNAL: with the request id of
        the server log), and ``infer_response`` carries the request's id and model and the status code's name
        in its ``code`` parameter. Requests still unanswered when the caller leaves are counted CANCELLED.
        """
        done: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(_STREAM_WINDOW)
        tasks: set[asyncio.Task] = set()
        deadline = deadline_of(context)

        async def one(msg: pb.ModelInferRequest) -> None:
            try:
                result = await self.handler.infer(to_infer_request(msg), deadline=deadline)
                answer = pb.ModelStreamInferResponse(infer_response=to_infer_response(result))
                code = "OK"
            except asyncio.CancelledError:
                self.metrics.request("ModelStreamInfer", "CANCELLED")
                raise
            except Exception as exc:
                status, message = failure("ModelStreamInfer", exc)
                answer = _stream_error(msg, status.name, message)
                code = status.name
            finally:
                window.release()
            self.metrics.request("ModelStreamInfer", code)
            await done.put(answer)

        async def reader() -> None:
            async for msg in request_iterator:
                await window.acquire()
                task = asyncio.create_task(one(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*list(tasks))
            await done.put(None)

        read = asyncio.create_task(reader())
        try:
            while (item := await done.get()) is not None:
                yield item
        finally:
            read.cancel()
            for task in list(tasks):
                task.cancel()
            if tasks:  # let them count themselves CANCELLED
                await asyncio.gather(*list(tasks), return_exceptions=True)

    @rpc
    async def ModelStatistics(self, request, context):
        if request.name:
            served = [self.models.get(request.name, request.version)]
        else:
            served = self.models.served_versions()
        return pb.ModelStatisticsResponse(model_stats=[_statistics(version) for version in served])

    @rpc
    async def RepositoryIndex(self, request, context):
        response = pb.RepositoryIndexResponse()
        for name, version, state, reason in self.models.index(ready_only=request.ready):
            response.models.add(name=name, version=version, state=state, reason=reason)
        return response

    @rpc
    async def RepositoryModelLoad(self, request, context):
        self.models.check_repository(request.repository_name)
        await self.models.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(self, request, context):
        self.models.check_repository(request.repository_name)
        await self.models.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _stream_error(msg: pb.ModelInferRequest, code: str, message: str) -> pb.ModelStreamInferResponse:
    """A stream's answer to a failed request: the unary message, and the request's id and the code beside it."""
    answer = pb.ModelStreamInferResponse(error_message=message)
    answer.infer_response.model_name = msg.model_name
    answer.infer_response.model_version = msg.model_version
    answer.infer_response.id = msg.id
    answer.infer_response.parameters["code"].string_param = code
    return answer


def _statistics(version) -> pb.ModelStatistics:
    s = version.stats
    stats = pb.ModelStatistics(
        name=version.spec.name,
        version=version.spec.version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
    )
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        d = getattr(s, field)
        getattr(stats.inference_stats, field).CopyFrom(pb.StatisticDuration(count=d.count, ns=d.ns))
    for size, b in sorted(s.batch_stats.items()):
        entry = stats.batch_stats.add(batch_size=size)
        for field in ("compute_input", "compute_infer", "compute_output"):
            d = getattr(b, field)
            getattr(entry, field).CopyFrom(pb.StatisticDuration(count=d.count, ns=d.ns))
    return stats
