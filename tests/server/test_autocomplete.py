"""A bare VERSION/model.onnx folder served with a config completed from its graph (Triton's auto-complete)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import model_config_pb2 as mc
from cnnserve.client import CnnserveClient
from cnnserve.repository import ModelConfigError, list_model_names, read_model
from support import ServerThread, tiny_onnx, write_model

TIMEOUT = 30


def sequence_input_onnx(path):
    """A valid ONNX graph whose input is a sequence of tensors: no model configuration can describe it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("SequenceAt", ["items", "first"], ["out"])],
        "sequence",
        [helper.make_tensor_sequence_value_info("items", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(0, dtype=np.int64), "first")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def expected(weights, bias, batch: np.ndarray) -> np.ndarray:
    logits = batch.reshape(len(batch), -1).astype(np.float32) / 255 @ weights + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_bare_folder_config_is_completed_from_the_graph(tmp_path):
    tiny_onnx(tmp_path / "bare" / "1" / "model.onnx")
    (tmp_path / "bare" / "labels.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    assert list_model_names(tmp_path) == ["bare"]
    (spec,) = read_model(tmp_path, "bare")
    assert (spec.max_batch_size, spec.dynamic_batching, spec.max_queue_delay_s) == (4, True, 0.0)
    assert [(t.name, t.datatype, t.dims) for t in spec.inputs] == [("images", "UINT8", (28, 28, 1))]
    assert [(t.name, t.datatype, t.dims) for t in spec.outputs] == [("probabilities", "FP32", (10,))]
    assert spec.labels[3] == "digit 3" and spec.config.platform == "onnxruntime_onnx"
    assert read_model(tmp_path, "bare", auto_complete_max_batch_size=16)[0].max_batch_size == 16
    unbatched = read_model(tmp_path, "bare", auto_complete_max_batch_size=0)[0]
    assert unbatched.max_batch_size == 0 and unbatched.inputs[0].dims == (-1, 28, 28, 1)


def test_fixed_batch_graph_is_completed_without_batching(tmp_path):
    tiny_onnx(tmp_path / "fixed" / "1" / "model.onnx", fixed_batch=1)
    (spec,) = read_model(tmp_path, "fixed")
    assert (spec.max_batch_size, spec.dynamic_batching) == (0, False)
    assert spec.inputs[0].dims == (1, 28, 28, 1) and spec.outputs[0].dims == (1, 10)


@pytest.mark.parametrize(
    "write, fragment",
    [
        (sequence_input_onnx, "has type seq(tensor(float)), which no KServe datatype describes"),
        (lambda path: path.write_bytes(b"not an onnx file"), "onnxruntime cannot read the graph"),
    ],
    ids=["sequence-input", "not-onnx"],
)
def test_undescribable_graph_is_refused_with_the_reason(tmp_path, write, fragment):
    (tmp_path / "odd" / "1").mkdir(parents=True)
    write(tmp_path / "odd" / "1" / "model.onnx")
    with pytest.raises(ModelConfigError, match="cannot complete the config from the graph") as err:
        read_model(tmp_path, "odd")
    assert fragment in str(err.value)


def test_server_serves_bare_and_fixed_batch_models_and_reports_the_undescribable_one(tmp_path):
    repo = tmp_path / "models"
    weights, bias = tiny_onnx(repo / "bare" / "1" / "model.onnx", seed=3)
    fixed_weights, fixed_bias = tiny_onnx(repo / "fixed" / "1" / "model.onnx", fixed_batch=1, seed=4)
    sequence_input_onnx(repo / "odd" / "1" / "model.onnx")
    write_model(repo, "full")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    server = ServerThread(repo, auto_complete_max_batch_size=8).start()
    try:
        with CnnserveClient(server.address, timeout=TIMEOUT) as client:
            index = client.inference.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=TIMEOUT)
            states = {m.name: (m.state, m.reason) for m in index.models}
            assert {k: v[0] for k, v in states.items()} == {
                "bare": "READY", "fixed": "READY", "full": "READY", "odd": "UNAVAILABLE",
            }  # fmt: skip
            assert "which no KServe datatype describes" in states["odd"][1]

            config = client.inference.ModelConfig(pb.ModelConfigRequest(name="bare"), timeout=TIMEOUT).config
            assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
            assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
                ("images", mc.TYPE_UINT8, [28, 28, 1])
            ]
            meta = client.inference.ModelMetadata(pb.ModelMetadataRequest(name="bare"), timeout=TIMEOUT)
            assert list(meta.inputs[0].shape) == [-1, 28, 28, 1]
            got = client.infer("bare", {"images": x})["probabilities"]
            np.testing.assert_allclose(got, expected(weights, bias, x), rtol=1e-5, atol=1e-6)

            config = client.inference.ModelConfig(pb.ModelConfigRequest(name="fixed"), timeout=TIMEOUT).config
            assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
            assert list(config.input[0].dims) == [1, 28, 28, 1]
            got = client.infer("fixed", {"images": x[:1]})["probabilities"]
            np.testing.assert_allclose(got, expected(fixed_weights, fixed_bias, x[:1]), rtol=1e-5, atol=1e-6)
            with pytest.raises(grpc.RpcError) as err:
                client.infer("fixed", {"images": x[:2]})
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            with pytest.raises(grpc.RpcError) as err:
                client.infer("odd", {"items": x})
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "KServe datatype" in err.value.details()
            assert client.infer("full", {"images": x})["probabilities"].shape == (3, 10)
    finally:
        server.stop()
