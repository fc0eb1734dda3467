"""VGG16 and ResNet50 written layer by layer with onnx.helper, behind the served uint8 NHWC contract.

Random He-initialised weights (the cost is what is measured); batch normalisation folded into the convolutions'
biases, as an inference graph has it. ``scale`` divides the widths and ``size`` sets the input side: the full
networks are ``scale=1, size=224`` (VGG16 15.5 GMAC = 31 GFLOP, ResNet50 4.1 GMAC = 8.2 GFLOP per image, as
the registry's networks); the CPU proof of the GPU script uses tiny ones. ``flops`` counts 2 per
multiply-add of every Conv and Gemm, the figure the card's arithmetic limit is computed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convs), configuration D
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck width, blocks, stride)

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "images" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ {size}, {size}, 3 ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {classes} ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ count: 1 kind: {kind} }} ]
"""


@dataclass
class _Graph:
    """Nodes and initialisers being written, the running FLOP count and the current tensor's shape."""

    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    flops: int = 0
    count: int = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def conv(self, x: str, hw: int, cin: int, cout: int, k: int, stride: int = 1, relu=True, gain=1.0):
        from onnx import helper

        n = self.name("conv")
        w = self.rng.standard_normal((cout, cin, k, k), np.float32) * np.float32(gain * (2 / (cin * k * k)) ** 0.5)
        b = self.rng.normal(0, 0.01, cout).astype(np.float32)  # a folded batch norm's shift
        pad = k // 2
        out_hw = (hw + 2 * pad - k) // stride + 1
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const(f"{n}_w", w), self.const(f"{n}_b", b)],
                [f"{n}_y"],
                pads=[pad] * 4,
                strides=[stride, stride],
                kernel_shape=[k, k],
            )
        )
        self.flops += 2 * out_hw * out_hw * cout * cin * k * k
        y = f"{n}_y"
        if relu:
            self.nodes.append(helper.make_node("Relu", [y], [f"{n}_r"]))
            y = f"{n}_r"
        return y, out_hw

    def gemm(self, x: str, cin: int, cout: int, relu=True) -> str:
        from onnx import helper

        n = self.name("fc")
        w = self.rng.standard_normal((cin, cout), np.float32) * np.float32((2 / cin) ** 0.5)
        inputs = [x, self.const(f"{n}_w", w), self.const(f"{n}_b", np.zeros(cout, np.float32))]
        self.nodes.append(helper.make_node("Gemm", inputs, [f"{n}_y"]))
        self.flops += 2 * cin * cout
        if not relu:
            return f"{n}_y"
        self.nodes.append(helper.make_node("Relu", [f"{n}_y"], [f"{n}_r"]))
        return f"{n}_r"

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        n = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [n], **attrs))
        return n


def _stem(g: _Graph) -> str:
    """uint8 NHWC [0, 255] -> float NCHW [-1, 1], in the graph as the exported models do it."""
    from onnx import TensorProto

    x = g.op("Cast", ["images"], to=TensorProto.FLOAT)
    x = g.op("Mul", [x, g.const("scale", np.array(1 / 127.5, np.float32))])
    x = g.op("Add", [x, g.const("offset", np.array(-1.0, np.float32))])
    return g.op("Transpose", [x], perm=[0, 3, 1, 2])


def _model(g: _Graph, x: str, size: int, classes: int, name: str):
    from onnx import TensorProto, helper

    g.nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def vgg16(size: int = 224, scale: int = 1, classes: int = 1000, seed: int = 0):
    """(ModelProto, FLOP per image): 13 3x3 convolutions in 5 blocks with max pools, then 3 dense layers."""
    g = _Graph(np.random.default_rng(seed))
    x, hw, channels = _stem(g), size, 3
    for filters, convs in VGG16_BLOCKS:
        for _ in range(convs):
            x, hw = g.conv(x, hw, channels, filters // scale, 3)
            channels = filters // scale
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        hw //= 2
    x = g.op("Flatten", [x], axis=1)
    width = channels * hw * hw
    for units in (4096 // scale, 4096 // scale):
        x = g.gemm(x, width, units)
        width = units
    x = g.gemm(x, width, classes, relu=False)
    return _model(g, x, size, classes, "vgg16"), g.flops


def resnet50(size: int = 224, scale: int = 1, classes: int = 1000, seed: int = 0, blocks=None):
    """(ModelProto, FLOP per image): ResNet50 v1.5 (stride on the 3x3), 16 bottlenecks, global pool, dense.

    The last convolution of each residual branch starts small (gain 0.2), so that 16 additions of random
    branches keep the activations inside float16's range; the cost is the same.
    """
    g = _Graph(np.random.default_rng(seed))
    x = _stem(g)
    x, hw = g.conv(x, size, 3, 64 // scale, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    hw = (hw + 2 - 3) // 2 + 1
    channels = 64 // scale
    for (width, _blocks, stride), n in zip(RESNET50_STAGES, blocks or [s[1] for s in RESNET50_STAGES], strict=True):
        mid, out = width // scale, 4 * width // scale
        for i in range(n):
            s = stride if i == 0 else 1
            y, _ = g.conv(x, hw, channels, mid, 1)
            y, out_hw = g.conv(y, hw, mid, mid, 3, stride=s)
            y, _ = g.conv(y, out_hw, mid, out, 1, relu=False, gain=0.2)
            shortcut = g.conv(x, hw, channels, out, 1, stride=s, relu=False)[0] if i == 0 else x
            x = g.op("Relu", [g.op("Add", [y, shortcut])])
            hw, channels = out_hw, out
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    x = g.gemm(x, channels, classes, relu=False)
    return _model(g, x, size, classes, "resnet50"), g.flops


def write_model(
    repository: Path, name: str, model, *, size: int, classes: int, max_batch: int, delay_us: int, kind: str
):
    """A model folder of the repository: config.pbtxt and 1/model.onnx."""
    import onnx

    folder = repository / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(
        CONFIG.format(name=name, max_batch=max_batch, size=size, classes=classes, delay_us=delay_us, kind=kind)
    )
    return folder / "1" / "model.onnx"
