"""The cnnserve client library: image classification and KServe v2 tensor inference over gRPC.

    with CnnserveClient("127.0.0.1:8001") as client:
        result = client.classify("mnist_cnn", [png_bytes], top_k=3)
        probabilities = client.infer("mnist_cnn", {"images": batch_uint8})["probabilities"]

Every call carries a deadline (``timeout`` seconds). The client depends on the generated stubs and
``cnnserve.protocol`` only, never on server code.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from cnnserve._proto.cnnserve.v1 import images_pb2, images_pb2_grpc
from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from cnnserve.protocol import DATATYPE_TO_NUMPY, NUMPY_TO_DATATYPE, deserialize_bytes, open_channel


class CnnserveClient:
    """Blocking client; one channel, reused across calls.

    TLS: pass ``tls_ca`` (and ``tls_cert``/``tls_key`` for mutual TLS). A bearer token (``token``, or the
    CNNSERVE_TOKEN environment variable) is sent with every call.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 30.0,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
    ) -> None:
        self.channel, self._raw_channel = open_channel(
            address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token
        )
        self.timeout = timeout
        self.inference = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.images = images_pb2_grpc.ImageServiceStub(self.channel)

    def __enter__(self) -> CnnserveClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._raw_channel.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the channel connects and the server reports ready."""
        grpc.channel_ready_future(self._raw_channel).result(timeout=timeout)
        if not self.inference.ServerReady(pb.ServerReadyRequest(), timeout=self.timeout).ready:
            raise RuntimeError("server is live but not ready")

    def classify(
        self, model: str, images: Sequence[bytes], *, top_k: int = 5, version: str = ""
    ) -> images_pb2.ClassifyResponse:
        request = images_pb2.ClassifyRequest(model_name=model, model_version=version, top_k=top_k)
        for i, data in enumerate(images):
            request.images.add(data=data, id=str(i))
        return self.images.Classify(request, timeout=self.timeout)

    def infer(self, model: str, inputs: dict[str, np.ndarray], *, version: str = "") -> dict[str, np.ndarray]:
        """KServe v2 ModelInfer with raw contents; returns every output as a numpy array."""
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            request.inputs.add(name=name, datatype=NUMPY_TO_DATATYPE[array.dtype], shape=array.shape)
            request.raw_input_contents.append(array.tobytes())
        response = self.inference.ModelInfer(request, timeout=self.timeout)
        return {
            out.name: _output_array(out.datatype, list(out.shape), raw)
            for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }


def _output_array(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    if datatype == "BYTES":  # classification results: b"score:index:label"
        return np.array(deserialize_bytes(raw), dtype=object).reshape(shape)
    return np.frombuffer(raw, dtype=DATATYPE_TO_NUMPY[datatype]).reshape(shape)
