"""The KServe peer: a small custom model for KServe's Python model server (`kserve` 0.21), serving an ONNX file
of a Triton-layout repository with onnxruntime over KServe v2 REST and gRPC. Runs in its own virtualenv
(benchmarks/peers/requirements-kserve.txt), never ours:

    python3 -m venv /tmp/peers-kserve-venv && /tmp/peers-kserve-venv/bin/pip install -r benchmarks/peers/requirements-kserve.txt
    /tmp/peers-kserve-venv/bin/python benchmarks/peers/kserve_model.py --repository /tmp/peers-bench/models \
        --http-port 19810 --grpc-port 19811 lenet5 mnist_cnn

It is what a KServe user writes (kserve.Model with load and predict), with the session tuned as cnnserve
tunes its own (the config's intra-op thread count, pool threads that sleep between runs). KServe's Python
server has no dynamic batcher of its own (KServe batches in its Go agent sidecar on Kubernetes), so every
request runs alone. Standard library besides kserve, numpy and onnxruntime.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


def _config(path: Path) -> dict:
    text = path.read_text()
    dims = [int(d) for d in re.search(r"input\s*\[.*?dims:\s*\[([^\]]*)\]", text, re.S).group(1).split(",")]
    out_dims = [int(d) for d in re.search(r"output\s*\[.*?dims:\s*\[([^\]]*)\]", text, re.S).group(1).split(",")]
    threads = re.search(r'key:\s*"intra_op_thread_count"\s*value:\s*\{\s*string_value:\s*"(\d+)"', text)
    return {"threads": int(threads.group(1)) if threads else 0, "in": dims, "out": out_dims}


class OnnxModel(Model):
    def __init__(self, name: str, folder: Path) -> None:
        super().__init__(name)
        self.folder = folder
        self.config = _config(folder / "config.pbtxt")
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.config["threads"]:
            options.intra_op_num_threads = self.config["threads"]
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        path = str(self.folder / "1" / "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    async def get_input_types(self) -> list[dict]:
        return [{"name": self.input_name, "datatype": "UINT8", "shape": [-1, *self.config["in"]]}]

    async def get_output_types(self) -> list[dict]:
        return [{"name": n, "datatype": "FP32", "shape": [-1, *self.config["out"]]} for n in self.output_names]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        results = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, dtype=np.uint8)})
        binary = payload.use_binary_outputs  # REST with binary_data_output: raw bytes back, as Triton
        outputs = []
        for name, y in zip(self.output_names, results, strict=True):
            out = InferOutput(name=name, shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id or generate_uuid(),
            use_binary_outputs=binary,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    models = [OnnxModel(name, args.repository / name) for name in args.models]
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1, enable_docs_url=False).start(models)


if __name__ == "__main__":
    main()
