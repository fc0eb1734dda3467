"""Accuracy through the served path: `cnnserve serve` on a model repository, NVIDIA's tritonclient over gRPC.

Starts the server on REPOSITORY (the folder `cnnserve export` writes), sends the held-out digits of each model's
own training run (the indices its metadata.json lists, so exactly the digits that training never saw) as UINT8
tensors, 64 per request, and prints the accuracy of the answers; then stops the server with SIGTERM.

    .venv/bin/python benchmarks/served_accuracy.py --repository models [--models mnist_cnn lenet5] [--port 19500]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def heldout(repository: Path, model: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The model's held-out digits, checked against the split hash in its metadata.json.

    The split is computed in a child process: cnnserve's modules register the ``inference.*`` protobuf
    symbols that tritonclient registers too, and one process cannot hold both."""
    meta = json.loads((repository / model / "1" / "metadata.json").read_text())
    code = (
        "import sys, numpy as np\n"
        "from cnnserve.training.data import load_mnist, split_dataset\n"
        "d = load_mnist(sys.argv[1]); h = split_dataset(d).heldout\n"
        "np.savez(sys.argv[2], x=d.x[h], y=d.y[h], idx=h)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "heldout.npz"
        subprocess.run([sys.executable, "-c", code, str(ROOT / meta["data"]["path"]), str(out)], check=True)
        with np.load(out) as f:
            x, y, idx = f["x"], f["y"], f["idx"]
    digest = hashlib.sha256(np.asarray(idx, dtype="<i8").tobytes()).hexdigest()
    if digest != meta["split"]["heldout_indices_sha256"]:
        raise SystemExit(f"{model}: the held-out split differs from the one its training used")
    return x, y, meta


def wait_ready(proc: subprocess.Popen) -> dict:
    """The server's JSON ready line (as cnnserve.process.wait_ready, without importing cnnserve)."""
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("event") == "ready":
            return json.loads(line)
    raise SystemExit(f"the server exited with status {proc.wait()} before it was ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["mnist_cnn", "lenet5"])
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0: any free one)")
    args = parser.parse_args()
    import tritonclient.grpc as grpcclient

    server = subprocess.Popen(
        [sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", str(args.repository), "--host",
         "127.0.0.1", "--grpc-port", str(args.port), "--metrics-port", "-1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{wait_ready(server)['grpc_port']}"
        client = grpcclient.InferenceServerClient(address)
        for model in args.models:
            x, y, train = heldout(args.repository, model)
            predictions = []
            for i in range(0, len(y), 64):
                inp = grpcclient.InferInput("images", list(x[i : i + 64].shape), "UINT8")
                inp.set_data_from_numpy(x[i : i + 64])
                out = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")])
                predictions.append(out.as_numpy("probabilities").argmax(axis=1))
            correct = int((np.concatenate(predictions) == y).sum())
            recorded = train.get("metrics", {}).get("heldout", {}).get("accuracy")
            print(
                f"{model}: {correct}/{len(y)} = {correct / len(y) * 100:.2f} % over gRPC (tritonclient, {address}); "
                f"training's own held-out figure {recorded}; epochs {train['training']['epochs']}, "
                f"seed {train['training']['seed']}",
                flush=True,
            )
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
        print(f"server exited with status {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
