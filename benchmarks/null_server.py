"""The transport ceiling: a grpc.aio KServe v2 server whose ModelInfer does no work.

It parses the request (as any Python servicer must) and returns one pre-built response of the right shape
(``probabilities`` FP32 [n, 10]), so `cnnserve bench` measures what gRPC + protobuf + the event loop cost on
this machine. ModelMetadata answers like mnist_cnn so the bench tool can build its requests.

    .venv/bin/python benchmarks/null_server.py [--port 0] [--uvloop]   # prints {"event": "ready", "grpc_port": N}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import grpc
import numpy as np

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc


class NullServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self._responses: dict[int, pb.ModelInferResponse] = {}

    def _response(self, n: int) -> pb.ModelInferResponse:
        response = self._responses.get(n)
        if response is None:
            response = pb.ModelInferResponse(model_name="null", model_version="1")
            response.outputs.add(name="probabilities", datatype="FP32", shape=[n, 10])
            response.raw_output_contents.append(np.full((n, 10), 0.1, dtype=np.float32).tobytes())
            self._responses[n] = response
        return response

    async def ModelInfer(self, request, context):
        n = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        return self._response(n)

    async def ModelMetadata(self, request, context):
        response = pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="null")
        response.inputs.add(name="images", datatype="UINT8", shape=[-1, 28, 28, 1])
        response.outputs.add(name="probabilities", datatype="FP32", shape=[-1, 10])
        return response

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(NullServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(json.dumps({"event": "ready", "grpc_port": bound}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (as `cnnserve serve --uvloop`)")
    args = parser.parse_args()
    factory = None
    if args.uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
