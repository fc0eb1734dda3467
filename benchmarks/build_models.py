"""Build the benchmark-only model repository (default /tmp/bench/models).

- lenet5 and mnist_cnn: `cnnserve train` (1 epoch on 2,000 digits: weights do not change the cost) and
  `cnnserve export`, exactly as users build them.
- vgg16: the compute-heavy model, VGG16 at 224x224x3 behind the same uint8 `images` contract (scaling in
  the graph), written directly in ONNX: about 15.5 GMAC (31 GFLOP) per image, 138 M parameters. Random
  weights: the cost is what matters here. The registry will get a real vgg16 later (issue 3); then use the
  exported one instead.

    .venv/bin/python benchmarks/build_models.py --repository /tmp/bench/models [--skip-vgg16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

VGG_CONFIG = """name: "vgg16"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "images" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ 224, 224, 3 ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 1000 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


def build_small(variant: str, repository: Path, artifacts: Path) -> None:
    cli = [sys.executable, "-m", "cnnserve.cli"]
    subprocess.run(
        [*cli, "train", variant, "--epochs", "1", "--limit", "2000", "--output-dir", str(artifacts)], check=True
    )
    subprocess.run(
        [
            *cli,
            "export",
            variant,
            "--artifacts",
            str(artifacts),
            "--model-repository",
            str(repository),
            "--parity-samples",
            "256",
        ],
        check=True,
    )


VGG16_BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]  # (filters, convs) per block, as in Keras


def build_vgg16(repository: Path, max_batch: int, delay_us: int, seed: int = 0) -> None:
    """VGG16 (configuration D) written layer by layer with onnx.helper: 13 3x3 convs, 5 max pools, 3 dense.

    Same layers and cost as keras.applications.VGG16(include_top=True) at 224x224 (tf2onnx needs more memory
    and time than this machine had to spare). Random He-initialised weights.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name: str, shape: tuple[int, ...], fan_in: int) -> str:
        inits.append(numpy_helper.from_array(rng.normal(0, (2 / fan_in) ** 0.5, shape).astype(np.float32), name))
        return name

    inits.append(numpy_helper.from_array(np.array(1 / 127.5, dtype=np.float32), "scale"))
    inits.append(numpy_helper.from_array(np.array(-1.0, dtype=np.float32), "offset"))
    nodes += [
        helper.make_node("Cast", ["images"], ["x_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_f", "scale"], ["x_s"]),
        helper.make_node("Add", ["x_s", "offset"], ["x_n"]),
        helper.make_node("Transpose", ["x_n"], ["x0"], perm=[0, 3, 1, 2]),  # NHWC on the wire, NCHW inside
    ]
    x, channels = "x0", 3
    for b, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            name = f"block{b}_conv{c}"
            w = weight(f"{name}_w", (filters, channels, 3, 3), channels * 9)
            inits.append(numpy_helper.from_array(np.zeros(filters, np.float32), f"{name}_b"))
            nodes.append(helper.make_node("Conv", [x, w, f"{name}_b"], [f"{name}_y"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"{name}_y"], [name]))
            x, channels = name, filters
        nodes.append(helper.make_node("MaxPool", [x], [f"block{b}_pool"], kernel_shape=[2, 2], strides=[2, 2]))
        x = f"block{b}_pool"
    nodes.append(helper.make_node("Flatten", [x], ["flatten"], axis=1))
    x, width = "flatten", 512 * 7 * 7
    for name, units in (("fc1", 4096), ("fc2", 4096), ("predictions", 1000)):
        w = weight(f"{name}_w", (width, units), width)
        inits.append(numpy_helper.from_array(np.zeros(units, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Gemm", [x, w, f"{name}_b"], [f"{name}_y"]))
        if name != "predictions":
            nodes.append(helper.make_node("Relu", [f"{name}_y"], [name]))
        x, width = (name if name != "predictions" else f"{name}_y"), units
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "vgg16",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder = repository / "vgg16"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(VGG_CONFIG.format(max_batch=max_batch, delay_us=delay_us))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("/tmp/bench/models"))
    parser.add_argument("--artifacts", type=Path, default=Path("/tmp/bench/artifacts"))
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-vgg16", action="store_true")
    parser.add_argument("--vgg16-max-batch", type=int, default=8)
    parser.add_argument("--vgg16-delay-us", type=int, default=5000)
    args = parser.parse_args()
    if not args.skip_small:
        for variant in ("lenet5", "mnist_cnn"):
            build_small(variant, args.repository, args.artifacts)
    if not args.skip_vgg16:
        build_vgg16(args.repository, args.vgg16_max_batch, args.vgg16_delay_us)
    return 0


if __name__ == "__main__":
    sys.exit(main())
