"""A real cnnserve server on 127.0.0.1:0 with real gRPC clients and real onnxruntime sessions."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve.client import CnnserveClient
from support import png_bytes

TIMEOUT = 30


def infer_request(model: str, batch: np.ndarray, **kw) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, **kw)
    request.inputs.add(name="images", datatype="UINT8", shape=batch.shape)
    request.raw_input_contents.append(batch.tobytes())
    return request


def reference(model_repo, name: str, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": batch})[0]


def test_health_liveness_metadata_and_reflection(shared_server):
    with CnnserveClient(shared_server.address) as client:
        assert client.inference.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live
        assert client.inference.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready
        assert client.inference.ModelReady(pb.ModelReadyRequest(name="tiny"), timeout=TIMEOUT).ready
        meta = client.inference.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
        assert meta.name == "cnnserve" and "classification" in meta.extensions
        model = client.inference.ModelMetadata(pb.ModelMetadataRequest(name="tiny"), timeout=TIMEOUT)
        assert model.platform == "onnxruntime_onnx" and list(model.versions) == ["1"]
        assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("images", "UINT8", [-1, 28, 28, 1])]
        assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("probabilities", "FP32", [-1, 10])]
        config = client.inference.ModelConfig(pb.ModelConfigRequest(name="tiny"), timeout=TIMEOUT).config
        assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds == 1000

        health = health_pb2_grpc.HealthStub(client.channel)
        for service in ("", "inference.GRPCInferenceService", "cnnserve.v1.ImageService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
            assert status == health_pb2.HealthCheckResponse.SERVING

        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for answer in answers for s in answer.list_services_response.service}
        assert {"inference.GRPCInferenceService", "cnnserve.v1.ImageService", "grpc.health.v1.Health"} <= names


def test_model_infer_matches_onnxruntime(shared_server, shared_repo, digits):
    x, _ = digits
    batch = x[:5, :, :, None]
    with CnnserveClient(shared_server.address) as client:
        got = client.infer("tiny", {"images": batch})["probabilities"]
    np.testing.assert_allclose(got, reference(shared_repo, "tiny", batch), rtol=1e-6, atol=1e-7)
    assert got.shape == (5, 10)


def test_typed_contents_give_the_same_answer_as_raw(shared_server, digits):
    x, _ = digits
    batch = x[10:12, :, :, None]
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=batch.shape)
    tensor.contents.uint_contents.extend(batch.ravel().tolist())
    with CnnserveClient(shared_server.address) as client:
        typed = client.inference.ModelInfer(request, timeout=TIMEOUT)
        raw = client.infer("tiny", {"images": batch})["probabilities"]
    got = np.frombuffer(typed.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(got, raw)


def test_classification_extension_returns_top_k_as_bytes(shared_server, digits):
    x, _ = digits
    batch = x[:3, :, :, None]
    request = infer_request("tiny", batch, id="req-7")
    out = request.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = 3
    with CnnserveClient(shared_server.address) as client:
        response = client.inference.ModelInfer(request, timeout=TIMEOUT)
        probabilities = client.infer("tiny", {"images": batch})["probabilities"]
    assert response.id == "req-7"
    assert response.outputs[0].datatype == "BYTES" and list(response.outputs[0].shape) == [3, 3]
    raw, entries = response.raw_output_contents[0], []
    while raw:
        n = int.from_bytes(raw[:4], "little")
        entries.append(raw[4 : 4 + n].decode())
        raw = raw[4 + n :]
    for row in range(3):
        top = np.argsort(-probabilities[row])[:3]
        for rank, idx in enumerate(top):
            score, index, label = entries[row * 3 + rank].split(":")
            assert int(index) == idx and label == f"class_{idx}"
            assert float(score) == pytest.approx(probabilities[row, idx], abs=1e-6)


def test_concurrent_requests_are_batched(server, digits):
    """Eight single-image requests on a model whose delay is a minute: only a full batch can run them."""
    x, _ = digits
    with CnnserveClient(server.address) as client:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client.infer, "slow", {"images": x[i : i + 1, :, :, None]}) for i in range(8)]
            results = [f.result(TIMEOUT) for f in futures]
        stats = client.inference.ModelStatistics(pb.ModelStatisticsRequest(name="slow"), timeout=TIMEOUT)
    assert all(r["probabilities"].shape == (1, 10) for r in results)
    (s,) = stats.model_stats
    assert s.inference_count == 8 and s.execution_count == 1
    assert [(b.batch_size, b.compute_infer.count) for b in s.batch_stats] == [(8, 1)]
    assert s.inference_stats.success.count == 8


def test_queue_full_is_refused_at_once_and_deadlines_are_honoured(server, digits):
    x, _ = digits
    one = x[:1, :, :, None]
    with CnnserveClient(server.address, timeout=3) as client:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(client.infer, "bounded", {"images": one}) for _ in range(2)]
            # The two waiting samples fill the queue (limit 2); wait (bounded) until the server holds them.
            batcher = server.server.models.get("bounded").batcher
            for _ in range(500):
                if batcher.queued_samples == 2:
                    break
                time.sleep(0.01)
            assert batcher.queued_samples == 2
            with pytest.raises(grpc.RpcError) as full:
                client.infer("bounded", {"images": one})
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue full" in full.value.details()
            for f in waiting:
                with pytest.raises(grpc.RpcError) as late:
                    f.result(TIMEOUT)
                assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The neighbour model is untouched.
        assert client.infer("tiny", {"images": one})["probabilities"].shape == (1, 10)
    stats = server.server.models.get("bounded").stats
    assert stats.rejected == 1 and stats.expired == 2 and stats.execution_count == 0


def _status(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value.code(), err.value.details()


def _bad(mutate):
    request = infer_request("tiny", np.zeros((2, 28, 28, 1), np.uint8))
    mutate(request)
    return request


def _set_batch(n: int):
    """A request of ``n`` images, shape and bytes consistent."""

    def mutate(r):
        r.inputs[0].ClearField("shape")
        r.inputs[0].shape.extend([n, 28, 28, 1])
        r.raw_input_contents[0] = bytes(n * 784)

    return mutate


def _set_classification(value):
    def mutate(r):
        out = r.outputs.add(name="probabilities")
        setattr(out.parameters["classification"], value[0], value[1])

    return mutate


BAD_REQUESTS = {
    "unknown input name": (
        lambda r: setattr(r.inputs[0], "name", "pixels"),
        "INVALID_ARGUMENT",
        "unexpected input 'pixels'",
    ),
    "missing input": (
        lambda r: (r.ClearField("inputs"), r.ClearField("raw_input_contents")),
        "INVALID_ARGUMENT",
        "expects input",
    ),
    "wrong datatype": (lambda r: setattr(r.inputs[0], "datatype", "FP32"), "INVALID_ARGUMENT", "datatype 'FP32'"),
    "unknown datatype": (lambda r: setattr(r.inputs[0], "datatype", "FLOAT"), "INVALID_ARGUMENT", "FLOAT"),
    "wrong rank": (
        lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([2, 784]),
        "INVALID_ARGUMENT",
        "shape [2, 784]",
    ),
    "wrong dims": (
        lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([2, 28, 28, 3]),
        "INVALID_ARGUMENT",
        "does not match",
    ),
    "byte count": (
        lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 100),
        "INVALID_ARGUMENT",
        "100 bytes, expected 1568",
    ),
    "negative dim": (
        lambda r: r.inputs[0].ClearField("shape") or r.inputs[0].shape.extend([-2, 28, 28, 1]),
        "INVALID_ARGUMENT",
        "negative",
    ),
    "empty batch": (_set_batch(0), "INVALID_ARGUMENT", "zero dimension"),
    "batch above max": (_set_batch(9), "INVALID_ARGUMENT", "max_batch_size 8"),
    "raw count mismatch": (lambda r: r.raw_input_contents.append(b"x"), "INVALID_ARGUMENT", "2 entries for 1 inputs"),
    "mixed raw and typed": (
        lambda r: r.inputs[0].contents.uint_contents.append(1),
        "INVALID_ARGUMENT",
        "typed contents",
    ),
    "unknown model": (lambda r: setattr(r, "model_name", "nope"), "NOT_FOUND", "unknown model 'nope'"),
    "unknown version": (lambda r: setattr(r, "model_version", "7"), "NOT_FOUND", "no version '7'"),
    "path in model name": (lambda r: setattr(r, "model_name", "../etc"), "INVALID_ARGUMENT", "invalid model name"),
    "unknown output": (lambda r: r.outputs.add(name="logits"), "INVALID_ARGUMENT", "unexpected output 'logits'"),
    "classification not int": (_set_classification(("string_param", "3")), "INVALID_ARGUMENT", "must be an integer"),
    "classification negative": (_set_classification(("int64_param", -1)), "INVALID_ARGUMENT", ">= 1"),
    "classification above classes": (
        _set_classification(("int64_param", 11)),
        "INVALID_ARGUMENT",
        "larger than the model's 10 classes",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_precise_statuses_and_the_server_keeps_serving(shared_server, case):
    mutate, code, fragment = BAD_REQUESTS[case]
    with CnnserveClient(shared_server.address) as client:
        got_code, details = _status(client.inference.ModelInfer, _bad(mutate), timeout=TIMEOUT)
        assert (got_code.name, fragment in details) == (code, True), details
        assert client.infer("tiny", {"images": np.zeros((1, 28, 28, 1), np.uint8)})["probabilities"].shape == (1, 10)


def test_classify_png_images_matches_tensor_inference(shared_server, digits):
    x, _ = digits
    with CnnserveClient(shared_server.address) as client:
        response = client.classify("tiny", [png_bytes(x[i]) for i in range(4)], top_k=2)
        probabilities = client.infer("tiny", {"images": x[:4, :, :, None]})["probabilities"]
    assert [r.id for r in response.results] == ["0", "1", "2", "3"]
    for row, result in zip(probabilities, response.results, strict=True):
        assert [p.index for p in result.predictions] == list(np.argsort(-row)[:2])
        assert result.predictions[0].label == f"class_{result.predictions[0].index}"
        assert result.predictions[0].score == pytest.approx(row.max(), abs=1e-6)


def _bomb_png() -> bytes:
    """A valid PNG header claiming 60,000 x 60,000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty image"),
        (b"this is not an image", "not a decodable"),
        (png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28)))[:-200], "corrupt or truncated"),
        (_bomb_png(), "refused before decoding"),
    ],
    ids=["empty", "not-an-image", "truncated", "bomb"],
)
def test_classify_bad_images(shared_server, data, fragment):
    with CnnserveClient(shared_server.address) as client:
        code, details = _status(client.classify, "tiny", [png_bytes(np.zeros((28, 28), np.uint8)), data])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details, details
        assert client.classify("tiny", [png_bytes(np.zeros((28, 28), np.uint8))]).results


def test_classify_refuses_other_formats_and_models_without_metadata(shared_server):
    import io

    from PIL import Image

    gif = io.BytesIO()
    Image.new("L", (28, 28)).save(gif, format="GIF")
    with CnnserveClient(shared_server.address) as client:
        code, details = _status(client.classify, "tiny", [gif.getvalue()])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "GIF" in details
        code, details = _status(client.classify, "nometa", [png_bytes(np.zeros((28, 28), np.uint8))])
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "metadata.json" in details
        code, details = _status(client.classify, "tiny", [png_bytes(np.zeros((28, 28), np.uint8))] * 9)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_batch_size 8" in details


def test_color_and_odd_sized_images_are_converted(shared_server):
    """Colour, odd sizes and alpha are converted as metadata.json says (grayscale, bilinear to 28x28): the
    predictions equal ModelInfer's on the image converted that way by hand."""
    from PIL import Image

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    rgb[10:30, 10:20] = 255
    gray = rng.integers(0, 255, (17, 50), dtype=np.uint8)
    rgba = np.dstack([rgb[:28, :28], np.full((28, 28), 128, np.uint8)])
    with CnnserveClient(shared_server.address) as client:
        for picture in (rgb, gray, rgba):
            expected = Image.fromarray(picture).convert("L")
            if expected.size != (28, 28):
                expected = expected.resize((28, 28), Image.Resampling.BILINEAR)
            tensor = np.asarray(expected, dtype=np.uint8)[None, :, :, None]
            probabilities = client.infer("tiny", {"images": tensor})["probabilities"][0]
            (result,) = client.classify("tiny", [png_bytes(picture)], top_k=10).results
            assert [p.index for p in result.predictions] == list(np.argsort(-probabilities, kind="stable"))
            np.testing.assert_allclose([p.score for p in result.predictions], np.sort(probabilities)[::-1], atol=1e-6)


def test_a_model_without_a_batch_dimension_serves_tensors_and_images(shared_server, shared_repo, digits):
    """max_batch_size 0: ModelInfer takes [28, 28, 1] and answers [10]; Classify takes exactly one image."""
    x, _ = digits
    with CnnserveClient(shared_server.address) as client:
        meta = client.inference.ModelMetadata(pb.ModelMetadataRequest(name="single"), timeout=TIMEOUT)
        assert [list(t.shape) for t in meta.inputs] == [[28, 28, 1]]
        got = client.infer("single", {"images": x[0, :, :, None]})["probabilities"]
        np.testing.assert_allclose(got, reference(shared_repo, "single", x[0, :, :, None]), rtol=1e-6, atol=1e-7)
        assert got.shape == (10,)
        request = infer_request("single", x[0, :, :, None])
        request.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
        response = client.inference.ModelInfer(request, timeout=TIMEOUT)
        assert list(response.outputs[0].shape) == [2]
        (result,) = client.classify("single", [png_bytes(x[0])], top_k=2).results
        assert [p.index for p in result.predictions] == list(np.argsort(-got)[:2])
        code, details = _status(client.classify, "single", [png_bytes(x[0])] * 2)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "2 samples, expected 1 to 1" in details
        code, details = _status(client.infer, "single", {"images": x[:1, :, :, None]})
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not match the model's [28, 28, 1]" in details


def test_repository_index_load_and_unload(server, model_repo):
    with CnnserveClient(server.address) as client:
        index = client.inference.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=TIMEOUT)
        assert {(m.name, m.state) for m in index.models} >= {("tiny", "READY"), ("nometa", "READY")}
        client.inference.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="nometa"), timeout=TIMEOUT)
        assert not client.inference.ModelReady(pb.ModelReadyRequest(name="nometa"), timeout=TIMEOUT).ready
        code, details = _status(client.infer, "nometa", {"images": np.zeros((1, 28, 28, 1), np.uint8)})
        assert code == grpc.StatusCode.UNAVAILABLE and "not ready" in details
        client.inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nometa"), timeout=TIMEOUT)
        assert client.infer("nometa", {"images": np.zeros((1, 28, 28, 1), np.uint8)})["probabilities"].shape == (1, 10)
        # A broken model file is refused with a reason, and the old version keeps serving.
        (model_repo / "nometa" / "1" / "model.onnx").write_bytes(b"not onnx")
        code, details = _status(
            client.inference.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="nometa"), timeout=TIMEOUT
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot load" in details
        assert client.infer("nometa", {"images": np.zeros((1, 28, 28, 1), np.uint8)})["probabilities"].shape == (1, 10)


def test_metrics_endpoint_reports_requests_and_batches(server, digits):
    x, _ = digits
    with CnnserveClient(server.address) as client:
        client.infer("tiny", {"images": x[:3, :, :, None]})
        _status(client.infer, "nope", {"images": x[:1, :, :, None]})
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'cnnserve_requests_total{code="OK",method="ModelInfer"}' in text
    assert 'cnnserve_requests_total{code="NOT_FOUND",method="ModelInfer"}' in text
    assert 'cnnserve_inference_total{model="tiny",version="1"} 3.0' in text
    assert 'cnnserve_batch_executions_total{batch_size="3",model="tiny",version="1"} 1.0' in text


def test_stream_infer_answers_every_request(shared_server, digits):
    x, _ = digits
    requests = [infer_request("tiny", x[i : i + 1, :, :, None], id=str(i)) for i in range(6)]
    requests.append(infer_request("nope", x[:1, :, :, None], id="bad"))
    with CnnserveClient(shared_server.address) as client:
        answers = list(client.inference.ModelStreamInfer(iter(requests), timeout=TIMEOUT))
    ok = sorted(a.infer_response.id for a in answers if not a.error_message)
    errors = [a.error_message for a in answers if a.error_message]
    assert ok == [str(i) for i in range(6)] and len(errors) == 1 and "unknown model 'nope'" in errors[0]
