"""NVIDIA's tritonclient against the composed server, unchanged: `compose_test.py` runs this in its own process.

tritonclient registers the `inference.*` protobuf symbols that cnnserve's stubs register too, so nothing
here imports cnnserve.

    python deploy/compose_tritonclient.py 127.0.0.1:8001 mnist_cnn lenet5
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

assert "cnnserve" not in sys.modules


def main(address: str, models: list[str]) -> int:
    data = np.load(Path(__file__).resolve().parent.parent / "data" / "mnist-8k.npz")
    x = data["x"][-16:, :, :, None]
    client = grpcclient.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    for model in models:
        assert client.is_model_ready(model), model
        inputs = client.get_model_metadata(model, as_json=True)["inputs"]
        assert inputs == [{"name": "images", "datatype": "UINT8", "shape": ["-1", "28", "28", "1"]}], inputs
        config = client.get_model_config(model).config
        assert config.platform == "onnxruntime_onnx", config.platform
        image = grpcclient.InferInput("images", list(x.shape), "UINT8")
        image.set_data_from_numpy(x)
        probs = client.infer(model, [image], client_timeout=30.0).as_numpy("probabilities")
        assert probs.shape == (len(x), 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4), probs.shape
        top = client.infer(
            model,
            [image],
            outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=2)],
            client_timeout=30.0,
        ).as_numpy("probabilities")
        assert top.shape == (len(x), 2), top.shape
        score, index, label = top[0, 0].decode().split(":")
        assert int(index) == int(probs[0].argmax()) and label == index, top[0]
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        print(
            f"ok: tritonclient {meta['name']} {meta['version']}: {model} infer {probs.shape}, classification "
            f"{top[0, 0].decode()}, inference_count {stats['inference_count']}"
        )
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
