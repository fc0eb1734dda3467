"""Test helpers shared by both test processes (plain functions, no cnnserve imports at module level)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "data" / "mnist-8k.npz"


def tiny_onnx(path: Path, *, height: int = 28, width: int = 28, channels: int = 1, classes: int = 10, seed: int = 0):
    """A real ONNX classifier: uint8 NHWC images -> x/255 -> dense -> softmax, with a dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    features = height * width * channels
    weights = rng.normal(0, 0.05, size=(features, classes)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=(classes,)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["x", "scale"], ["xs"]),
        helper.make_node("Reshape", ["xs", "flat"], ["xf"]),
        helper.make_node("MatMul", ["xf", "w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "flat"),
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", height, width, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return weights, bias


def write_model(
    repo: Path,
    name: str,
    *,
    max_batch_size: int = 8,
    delay_us: int = 1000,
    queue_size: int = 0,
    classes: int = 10,
    version: int = 1,
    metadata: bool = True,
    seed: int = 0,
) -> Path:
    """A model folder of the repository contract: config.pbtxt, labels.txt, VERSION/model.onnx, metadata.json."""

    folder = repo / name
    tiny_onnx(folder / str(version) / "model.onnx", classes=classes, seed=seed)
    queue = f" default_queue_policy {{ max_queue_size: {queue_size} }}" if queue_size else ""
    (folder / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        'input [ { name: "images" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ 28, 28, 1 ] } ]\n'
        f'output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {classes} ] label_filename: "labels.txt" }} ]\n'
        f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us}{queue} }}\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    (folder / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(classes)))
    if metadata:
        meta = {
            "schema_version": 1,
            "name": name,
            "input": {"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1], "layout": "NHWC"},
            "output": {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            "labels": [f"class_{i}" for i in range(classes)],
            "preprocessing": {
                "height": 28,
                "width": 28,
                "channels": 1,
                "color_mode": "grayscale",
                "resize": "bilinear",
            },
        }
        (folder / str(version) / "metadata.json").write_text(json.dumps(meta))
    return folder


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class ServerProcess:
    """`cnnserve serve` as a real subprocess on 127.0.0.1 port 0; reads the ports from its ready line."""

    def __init__(self, repository: Path, *extra: str) -> None:
        self.args = [
            sys.executable,
            "-m",
            "cnnserve.cli",
            "serve",
            "--model-repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            *extra,
        ]
        self.proc: subprocess.Popen | None = None
        self.grpc_port = self.metrics_port = 0

    def start(self, timeout: float = 120) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        from cnnserve.process import wait_ready

        event = wait_ready(self.proc, timeout)
        self.grpc_port, self.metrics_port = event["grpc_port"], event["metrics_port"]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


class Load:
    """Client threads sending requests until stopped (bounded), counting answers by version and status."""

    def __init__(self, address: str, model: str, threads: int = 4, limit: int = 20_000) -> None:
        self.address, self.model, self.limit = address, model, limit
        self.versions: Counter = Counter()
        self.errors: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        import grpc

        from cnnserve._proto.inference import grpc_service_pb2 as pb
        from cnnserve.client import CnnserveClient

        request = pb.ModelInferRequest(model_name=self.model)
        request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28, 1])
        request.raw_input_contents.append(bytes(784))
        with CnnserveClient(self.address, timeout=30) as client:
            for _ in range(self.limit):
                if self._stop.is_set():
                    return
                try:
                    version = client.inference.ModelInfer(request, timeout=30).model_version
                    with self._lock:
                        self.versions[version] += 1
                except grpc.RpcError as err:
                    with self._lock:
                        self.errors[(err.code().name, err.details())] += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def total(self) -> int:
        with self._lock:
            return sum(self.versions.values()) + sum(self.errors.values())
