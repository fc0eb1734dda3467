"""The request path without a server: protobuf -> plain request, validation, decoding, top-k, the answer.

The model behind the handler is a real repository spec with a real DynamicBatcher around a numpy function, so
each rule is checked where it lives, with no gRPC transport and no onnxruntime session.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve.protocol import deserialize_bytes, serialize_bytes
from cnnserve.repository import read_model
from cnnserve.server.batcher import DynamicBatcher
from cnnserve.server.grpc.inference import to_infer_request, to_infer_response
from cnnserve.server.images import ImageHandler
from cnnserve.server.inference import InferenceHandler, InferRequest, RequestedOutput
from cnnserve.server.model_manager import ServedVersion
from cnnserve.server.stats import ModelStats
from cnnserve.server.tensors import WireTensor, check_shape, decode_tensor
from cnnserve.server.topk import classification_tensor, top_k
from cnnserve.service.errors import InvalidArgument, NotFound
from support import png_bytes, write_model

CLASSES = 10


def scores(images: np.ndarray) -> np.ndarray:
    """A stand-in model: class k's score grows with the mean of image row k (so the answer is predictable)."""
    rows = images.reshape(*images.shape[:-3], images.shape[-3], -1).mean(axis=-1)[..., :CLASSES]
    e = np.exp(rows.astype(np.float32) / 255)
    return e / e.sum(axis=-1, keepdims=True)


class Models:
    """The ModelManager's lookup, over specs read from a real repository and real batchers."""

    def __init__(self, versions: dict[str, ServedVersion]) -> None:
        self.versions = versions
        self.runs: list[tuple[int, ...]] = []

    def get(self, name: str, version: str = "") -> ServedVersion:
        if name not in self.versions:
            raise NotFound(f"unknown model {name!r}")
        return self.versions[name]


@pytest.fixture
def models(tmp_path):
    """ "batched" (max_batch_size 4) and "single" (max_batch_size 0: no batch dimension), batchers running."""
    write_model(tmp_path, "batched", max_batch_size=4)
    write_model(tmp_path, "single", max_batch_size=0)
    table = Models({})

    def run(inputs):
        table.runs.append(inputs["images"].shape)
        return {"probabilities": scores(inputs["images"])}

    loop = asyncio.new_event_loop()
    for name in ("batched", "single"):
        (spec,) = read_model(tmp_path, name)
        batcher = DynamicBatcher(
            run,
            name=f"{name}:1",
            max_batch_size=max(spec.max_batch_size, 1),
            max_queue_delay_s=0.0,
            max_queue_size=16,
            stats=ModelStats(),
            batch_dimension=spec.batching,
        )
        loop.run_until_complete(batcher.start())
        table.versions[name] = ServedVersion(spec, None, batcher, batcher.stats)
    table.loop = loop
    yield table
    for served in table.versions.values():
        loop.run_until_complete(served.batcher.stop())
    loop.close()


def wire(shape, data: bytes | None = None, datatype: str = "UINT8", name: str = "images") -> WireTensor:
    count = int(np.prod(shape)) if all(d >= 0 for d in shape) else 0
    return WireTensor(name, datatype, tuple(shape), raw=bytes(count) if data is None else data)


# --- protobuf -> plain request ------------------------------------------------------------------------


def test_raw_and_typed_contents_become_wire_tensors():
    msg = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    msg.inputs.add(name="a", datatype="UINT8", shape=[1, 2])
    msg.raw_input_contents.append(b"\x01\x02")
    out = msg.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = 3
    request = to_infer_request(msg)
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "r1")
    assert request.inputs == [WireTensor("a", "UINT8", (1, 2), raw=b"\x01\x02")]
    assert request.outputs == [RequestedOutput("probabilities", 3)]

    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="a", datatype="INT32", shape=[3]).contents.int_contents.extend([1, -2, 3])
    typed.outputs.add(name="plain")
    (tensor,) = to_infer_request(typed).inputs
    assert tensor.raw is None and list(tensor.typed) == [1, -2, 3]
    assert to_infer_request(typed).outputs == [RequestedOutput("plain", None)]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda m: m.raw_input_contents.extend([b"x", b"y"]), "2 entries for 1 inputs"),
        (lambda m: (m.raw_input_contents.append(b"x"), m.inputs[0].contents.uint_contents.append(1)), "typed"),
        (lambda m: setattr(m.inputs[0], "datatype", "FLOAT"), "unknown datatype 'FLOAT'"),
        (lambda m: m.inputs[0].contents.fp32_contents.append(1.0), "expects uint_contents, got fp32_contents"),
        (
            lambda m: setattr(m.outputs.add(name="p").parameters["classification"], "string_param", "3"),
            "must be an integer, got string_param",
        ),
    ],
    ids=["raw-count", "raw-and-typed", "datatype", "wrong-field", "classification-type"],
)
def test_envelope_errors_are_caught_in_the_conversion(mutate, fragment):
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="a", datatype="UINT8", shape=[1])
    mutate(msg)
    with pytest.raises(InvalidArgument, match=fragment):
        to_infer_request(msg)


# --- shapes and decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, batching, fragment",
    [
        ((1, 28, 28), True, "does not match the model's [-1, 28, 28, 1]"),
        ((1, 28, 28, 3), True, "does not match"),
        ((-1, 28, 28, 1), True, "negative dimension"),
        ((0, 28, 28, 1), True, "zero dimension"),
        ((1, 28, 28, 1), False, "does not match the model's [28, 28, 1]"),
    ],
)
def test_check_shape_refuses_with_what_was_expected(shape, batching, fragment):
    with pytest.raises(InvalidArgument) as err:
        check_shape("images", shape, (28, 28, 1), batching)
    assert fragment in err.value.message and "input 'images'" in err.value.message


def test_check_shape_accepts_any_batch_and_variable_dims():
    check_shape("x", (64, 5, 3), (-1, 3), batching=True)  # the batch bound is the batcher's rule
    check_shape("x", (28, 28, 1), (28, 28, 1), batching=False)


def test_raw_contents_decode_without_a_copy_and_are_counted():
    data = np.arange(6, dtype="<i4").tobytes()
    array = decode_tensor(wire((2, 3), data, "INT32", "x"))
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]] and array.dtype == np.dtype("<i4")
    assert not array.flags.owndata  # a view of the request's bytes
    with pytest.raises(InvalidArgument, match="raw content has 20 bytes, expected 24"):
        decode_tensor(wire((2, 3), data[:20], "INT32", "x"))


@pytest.mark.parametrize(
    "tensor, fragment",
    [
        (WireTensor("x", "UINT8", (2,), typed=[1, 256]), "out of range for UINT8"),
        (WireTensor("x", "INT8", (2,), typed=[-129, 0]), "out of range for INT8"),
        (WireTensor("x", "UINT8", (3,), typed=[1, 2]), "contents has 2 elements, expected 3"),
        (WireTensor("x", "FP16", (1,), typed=[1.0]), "FP16 data must be sent in raw_input_contents"),
        (WireTensor("x", "UINT8", (1,)), "no data"),
        (WireTensor("x", "BYTES", (1,), typed=[b"a"]), "unsupported datatype 'BYTES'"),
        (WireTensor("x", "UINT8", (1 << 16, 1 << 16)), "too many elements"),
    ],
    ids=["uint8-range", "int8-range", "count", "fp16-typed", "no-data", "bytes", "huge"],
)
def test_typed_contents_are_checked_against_the_datatype(tensor, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        decode_tensor(tensor)


def test_typed_contents_decode_to_the_datatype():
    array = decode_tensor(WireTensor("x", "UINT16", (2, 2), typed=[1, 2, 3, 65535]))
    assert array.dtype == np.dtype("<u2") and array.tolist() == [[1, 2], [3, 65535]]


# --- the handler's rules ------------------------------------------------------------------------------


def infer(models: Models, request: InferRequest):
    return models.loop.run_until_complete(InferenceHandler(models).infer(request))


def images_request(model: str, shape, outputs=(), **inputs) -> InferRequest:
    return InferRequest(model, inputs=[wire(shape), *inputs.values()], outputs=list(outputs))


@pytest.mark.parametrize(
    "request_, fragment",
    [
        (InferRequest("batched", inputs=[wire((1, 28, 28, 1), name="pixels")]), "unexpected input 'pixels'"),
        (InferRequest("batched", inputs=[wire((1, 28, 28, 1)), wire((1, 28, 28, 1))]), "appears more than once"),
        (InferRequest("batched", inputs=[wire((1, 28, 28, 1), datatype="INT8")]), "datatype 'INT8' does not match"),
        (InferRequest("batched"), "expects input(s) ['images']"),
        (images_request("batched", (1, 28, 28, 1), [RequestedOutput("logits")]), "unexpected output 'logits'"),
        (images_request("batched", (1, 28, 28, 1), [RequestedOutput("probabilities", 0)]), ">= 1, got 0"),
        (images_request("batched", (1, 28, 28, 1), [RequestedOutput("probabilities", -2)]), ">= 1, got -2"),
        (images_request("batched", (5, 28, 28, 1)), "5 samples, expected 1 to 4 (max_batch_size 4)"),
        (images_request("batched", (1, 28, 28, 1), [RequestedOutput("probabilities", 11)]), "larger than"),
        (images_request("single", (1, 28, 28, 1)), "does not match the model's [28, 28, 1]"),
    ],
    ids=[
        "input-name",
        "duplicate",
        "datatype",
        "missing",
        "output-name",
        "k-zero",
        "k-negative",
        "batch-above-max",
        "k-above-classes",
        "batch-dim-on-single",
    ],
)
def test_the_handler_refuses_what_the_model_cannot_take(models, request_, fragment):
    with pytest.raises(InvalidArgument) as err:
        infer(models, request_)
    assert fragment in err.value.message, err.value.message


def test_a_refused_request_never_reaches_the_model(models):
    with pytest.raises(InvalidArgument):
        infer(models, images_request("batched", (5, 28, 28, 1)))
    assert models.runs == []


def test_inputs_that_disagree_on_the_batch_size_are_refused_before_the_queue():
    """A model with two inputs: their first dimensions must agree (the batcher's rule, checked at submit)."""
    batcher = DynamicBatcher(
        lambda inputs: inputs, name="two:1", max_batch_size=4, max_queue_delay_s=0, max_queue_size=4, stats=ModelStats()
    )
    with pytest.raises(InvalidArgument, match="share one first"):
        batcher.sample_count({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})


def test_batched_model_answers_each_row_and_top_k_with_labels(models):
    x = np.zeros((2, 28, 28, 1), np.uint8)
    x[0, 3] = 255  # row 3 bright: class 3 wins the first image
    x[1, 7] = 200
    request = InferRequest(
        "batched",
        id="r",
        inputs=[wire(x.shape, x.tobytes())],
        outputs=[RequestedOutput("probabilities"), RequestedOutput("probabilities", 2)],
    )
    result = infer(models, request)
    assert (result.model_name, result.model_version, result.id) == ("batched", "1", "r")
    plain, top = result.outputs
    np.testing.assert_allclose(plain.data, scores(x), rtol=1e-6)
    assert plain.datatype == "FP32" and top.datatype == "BYTES" and top.data.shape == (2, 2)
    assert top.data[0, 0].startswith(b"0.") and top.data[0, 0].endswith(b":3:class_3")
    assert top.data[1, 0].endswith(b":7:class_7")
    assert models.runs == [(2, 28, 28, 1)]


def test_a_model_without_a_batch_dimension_gets_its_tensors_as_they_are(models):
    """max_batch_size 0: the request's shape has no batch dimension, and neither has what the model sees."""
    x = np.zeros((28, 28, 1), np.uint8)
    x[5] = 255
    request = InferRequest("single", inputs=[wire(x.shape, x.tobytes())], outputs=[RequestedOutput("probabilities", 1)])
    (top,) = infer(models, request).outputs
    assert top.data.shape == (1,) and top.data[0].endswith(b":5:class_5")
    (plain,) = infer(models, InferRequest("single", inputs=[wire(x.shape, x.tobytes())])).outputs
    assert plain.data.shape == (CLASSES,)
    assert models.runs == [(28, 28, 1), (28, 28, 1)]


def test_classify_on_both_kinds_of_model(models):
    image = np.zeros((28, 28), np.uint8)
    image[6] = 255
    handler = ImageHandler(models)
    for name in ("batched", "single"):
        result = models.loop.run_until_complete(handler.classify(name, "", [png_bytes(image)], top_k=3))
        (predictions,) = result.predictions
        assert [p.index for p in predictions][0] == 6 and predictions[0].label == "class_6"
        assert len(predictions) == 3
    with pytest.raises(InvalidArgument, match="2 samples, expected 1 to 1"):
        models.loop.run_until_complete(handler.classify("single", "", [png_bytes(image)] * 2))


# --- top-k and the answer -----------------------------------------------------------------------------


def test_top_k_orders_by_score_keeps_class_order_on_ties_and_falls_back_without_labels():
    probabilities = np.array([[0.1, 0.4, 0.4, 0.1], [0.7, 0.1, 0.1, 0.1]], np.float32)
    rows = top_k(probabilities, 3, ["a", "b"])
    assert [[(p.index, p.label) for p in row] for row in rows] == [
        [(1, "b"), (2, ""), (0, "a")],
        [(0, "a"), (1, "b"), (2, "")],
    ]
    assert classification_tensor(probabilities, 2, ["a", "b"]).tolist() == [
        [b"0.400000:1:b", b"0.400000:2"],
        [b"0.700000:0:a", b"0.100000:1:b"],
    ]
    with pytest.raises(InvalidArgument, match="k=5 is larger than the model's 4 classes"):
        top_k(probabilities, 5, [])


def test_the_answer_carries_raw_bytes_and_bytes_tensors_round_trip(models):
    x = np.zeros((1, 28, 28, 1), np.uint8)
    request = InferRequest(
        "batched",
        inputs=[wire(x.shape, x.tobytes())],
        outputs=[RequestedOutput("probabilities"), RequestedOutput("probabilities", 2)],
    )
    response = to_infer_response(infer(models, request))
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("probabilities", "FP32", [1, 10]),
        ("probabilities", "BYTES", [1, 2]),
    ]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4").reshape(1, 10), scores(x))
    assert len(deserialize_bytes(response.raw_output_contents[1])) == 2
    values = [b"", b"a", b"\x00" * 300]
    assert deserialize_bytes(serialize_bytes(values)) == values
    with pytest.raises(ValueError, match="runs past the end"):
        deserialize_bytes(serialize_bytes([b"abc"])[:-1])
