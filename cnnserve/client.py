"""A small gRPC client for cnnserve: image classification and KServe v2 tensor inference.

    with CnnserveClient("127.0.0.1:8001") as client:
        result = client.classify("mnist_cnn", [png_bytes], top_k=3)
        probabilities = client.infer("mnist_cnn", {"images": batch_uint8})["probabilities"]

Every call carries a deadline (``timeout`` seconds).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from cnnserve._proto.cnnserve.v1 import images_pb2, images_pb2_grpc
from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.tensors import DATATYPE_TO_NUMPY

NUMPY_TO_DATATYPE = {v: k for k, v in DATATYPE_TO_NUMPY.items()}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call on a channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details):
        extra = tuple(details.metadata or ()) + self._metadata
        return details._replace(metadata=extra) if hasattr(details, "_replace") else _Details(details, extra)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


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
        from cnnserve.server.security import channel_credentials, env_token

        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if tls_ca or tls_cert:
            channel = grpc.secure_channel(address, channel_credentials(tls_ca, tls_cert, tls_key), options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        self._raw_channel = channel
        token = token or env_token()
        if token:
            channel = grpc.intercept_channel(channel, _Metadata((("authorization", f"Bearer {token}"),)))
        self.channel = channel
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
            out.name: np.frombuffer(raw, dtype=DATATYPE_TO_NUMPY[out.datatype]).reshape(out.shape)
            for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
