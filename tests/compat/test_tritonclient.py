"""Wire compatibility: NVIDIA's own tritonclient (sync and asyncio) against a `cnnserve serve` subprocess.

Runs in its own pytest process (`pytest tests/compat`): tritonclient registers the `inference.*` protobuf
symbols that our stubs register too, so this process never imports cnnserve's stubs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from support import DIGITS, ROOT, ServerProcess, write_model

MODEL = "tiny"


def images_input(client_module, batch: np.ndarray):
    """The model's one input, ``images`` UINT8 [n, 28, 28, C], for tritonclient's grpc or grpc.aio module."""
    inp = client_module.InferInput("images", list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    return inp


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("models")
    write_model(repo, MODEL, max_batch_size=8, delay_us=500)
    write_model(repo, "other", max_batch_size=4)
    proc = ServerProcess(repo).start()
    yield proc
    assert proc.terminate() == 0


@pytest.fixture(scope="module")
def digits():
    data = np.load(DIGITS)
    return data["x"][:, :, :, None], data["y"]


def test_health_and_metadata(server):
    client = grpcclient.InferenceServerClient(server.address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "cnnserve" and "classification" in meta["extensions"]
    model = client.get_model_metadata(MODEL, as_json=True)
    assert model["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": ["-1", "28", "28", "1"]}]
    config = client.get_model_config(MODEL).config
    assert config.max_batch_size == 8 and config.platform == "onnxruntime_onnx"
    assert config.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert config.output[0].label_filename == "labels.txt"
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    client.close()


def test_infer_and_classification(server, digits):
    x, _ = digits
    client = grpcclient.InferenceServerClient(server.address)
    inp = images_input(grpcclient, x[:4])
    result = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")], request_id="r1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (4, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert result.get_response().id == "r1"

    top = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
    labels = top.as_numpy("probabilities")
    assert labels.shape == (4, 3)
    for row, entries in zip(probabilities, labels, strict=True):
        indices = [int(e.decode().split(":")[1]) for e in entries]
        assert indices == list(np.argsort(-row)[:3])
        assert entries[0].decode().split(":")[2] == f"class_{indices[0]}"
    client.close()


def test_errors_arrive_as_inference_server_exceptions(server):
    client = grpcclient.InferenceServerClient(server.address)
    inp = images_input(grpcclient, np.zeros((1, 28, 28, 3), np.uint8))
    with pytest.raises(InferenceServerException) as err:
        client.infer(MODEL, [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "does not match" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert client.is_server_ready()
    client.close()


def test_statistics_repository_and_lifecycle(server, digits):
    x, _ = digits
    client = grpcclient.InferenceServerClient(server.address)
    inp = images_input(grpcclient, x[:2])
    client.infer("other", [inp])
    stats = client.get_inference_statistics("other").model_stats[0]
    assert stats.inference_count == 2 and stats.execution_count == 1
    assert [b.batch_size for b in stats.batch_stats] == [2]
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index == {MODEL: "READY", "other": "READY"}
    client.unload_model("other")
    assert not client.is_model_ready("other")
    client.load_model("other")
    assert client.is_model_ready("other")
    client.close()


def test_asyncio_client_concurrent_requests(server, digits):
    x, _ = digits

    async def main():
        client = aioclient.InferenceServerClient(server.address)
        try:
            assert await client.is_server_ready()

            async def one(i):
                inp = images_input(aioclient, x[i : i + 1])
                return (await client.infer(MODEL, [inp])).as_numpy("probabilities")

            return await asyncio.gather(*(one(i) for i in range(32)))
        finally:
            await client.close()

    results = asyncio.run(main())
    assert len(results) == 32 and all(r.shape == (1, 10) for r in results)


def _our_descriptors() -> dict[str, descriptor_pb2.DescriptorProto]:
    """Our protos compiled to a descriptor set (without importing our stubs into this process)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos" / "inference").glob("*.proto"))
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}", f"--descriptor_set_out={out}", *protos],
            check=True,
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    messages = {}

    def walk(prefix, types):
        for m in types:
            messages[prefix + m.name] = m
            walk(prefix + m.name + ".", m.nested_type)

    for f in files.file:
        walk("", f.message_type)
    return messages


def test_every_field_we_define_matches_triton_on_the_wire():
    """Same message names, field numbers, types and labels as tritonclient's generated protocol."""
    ours = _our_descriptors()
    theirs = {}
    for module in (service_pb2, model_config_pb2):
        proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)

        def walk(prefix, types):
            for m in types:
                theirs[prefix + m.name] = m
                walk(prefix + m.name + ".", m.nested_type)

        walk("", proto.message_type)
    checked = 0
    for name, message in ours.items():
        assert name in theirs, f"message {name} is not in Triton's protocol"
        their_fields = {f.name: f for f in theirs[name].field}
        for field in message.field:
            other = their_fields.get(field.name)
            assert other is not None, f"{name}.{field.name} is not in Triton's protocol"
            assert (field.number, field.type, field.label) == (other.number, other.type, other.label), (
                f"{name}.{field.name}"
            )
            checked += 1
    assert checked > 150
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
