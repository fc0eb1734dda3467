"""`make demo`: the whole pipeline on the bundled digits, end to end.

1. train `mnist_cnn` and `lenet5` on the bundled MNIST digits (held-out digits never seen in training);
2. export each to ONNX with a parity check against TensorFlow, into the Triton-layout repository `models/`;
3. start the explainer sidecar and `cnnserve serve` on that repository;
4. classify held-out digits over gRPC: PNG images through the image API, and the whole held-out set as
   tensors through the KServe v2 API; then the `cnnserve classify` command on a few PNG files;
5. start the explainer sidecar beside the server and write a heatmap overlay for one digit with the model's
   default layer and method, chosen at export by the faithfulness scores (`cnnserve explain`, through the main
   server's port);
6. stop both with SIGTERM. The repository stays in `models/`; the pictures in `out/`.

Options make a quick run possible (the tests use them): --epochs 1 --limit 256 --workdir /tmp/x.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mnist_cnn", "lenet5")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="override the variants' default epochs")
    parser.add_argument("--limit", type=int, default=None, help="train on only N digits (quick runs)")
    parser.add_argument("--workdir", type=Path, default=ROOT, help="where artifacts/, models/ and out/ go")
    parser.add_argument("--show", type=int, default=12, help="held-out digits to print one by one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from cnnserve.export.exporter import export_variant
    from cnnserve.process import wait_ready
    from cnnserve.training.data import DEFAULT_DATA, load_mnist, split_dataset
    from cnnserve.training.train import train_variant

    data_path = ROOT / DEFAULT_DATA
    artifacts, models, out = args.workdir / "artifacts", args.workdir / "models", args.workdir / "out"
    timings = {}
    for name in MODELS:
        _banner(f"train {name}")
        started = time.monotonic()
        train_variant(name, data_path=data_path, epochs=args.epochs, output_dir=artifacts, limit=args.limit, verbose=2)
        timings[name] = time.monotonic() - started
        _banner(f"export {name} -> {models / name}")
        export_variant(name, artifacts=artifacts, repository=models, data_path=data_path)
        meta = json.loads((models / name / "1" / "metadata.json").read_text())
        print(
            f"{name}: trained in {timings[name]:.0f}s; parity on {meta['parity']['samples']} held-out digits: "
            f"top-1 agreement {meta['parity']['top1_agreement']:.4f}, max |dp| {meta['parity']['max_abs_diff']:.2e}"
        )
        scored = meta.get("faithfulness") or {}
        if scored.get("default"):
            best = scored["default"]
            print(
                f"{name}: heatmap default {best['method']} at {best['layer']} (faithfulness score {best['score']:.3f} "
                f"on {scored['samples']} held-out digits, scored in {scored['seconds']:.0f}s)"
            )

    data = load_mnist(data_path)
    held = split_dataset(data).heldout
    x, y = data.x[held], data.y[held]
    x = x if x.ndim == 4 else x[..., None]  # NHWC uint8, as the served models take it

    _banner("start the explainer sidecar (TensorFlow) and the server (onnxruntime)")
    explainer = subprocess.Popen(
        [sys.executable, "-m", "cnnserve.cli", "explainer", "--model-repository", str(models), "--host", "127.0.0.1",
         "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = None
    try:
        explainer_address = f"127.0.0.1:{wait_ready(explainer)['grpc_port']}"
        print(f"explainer ready on {explainer_address}")
        server = subprocess.Popen(
            [sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", str(models), "--host", "127.0.0.1",
             "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0", "--explainer-address", explainer_address],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        ready = wait_ready(server)
        address = f"127.0.0.1:{ready['grpc_port']}"
        print(f"server ready on {address} (metrics on :{ready['metrics_port']})")
        _classify(address, x, y, out, args.show)
        _explain(address, out)
    finally:
        _banner("stop the server and the explainer (SIGTERM)")
        code = 1
        if server is not None:
            server.send_signal(signal.SIGTERM)
            code = server.wait(30)
            print(f"server exited with status {code}")
        explainer.send_signal(signal.SIGTERM)
        print(f"explainer exited with status {explainer.wait(30)}")
    print(f"\nThe model repository stays in {models}; serve it again with: "
          f".venv/bin/cnnserve serve --model-repository {models}")  # fmt: skip
    return 0 if code == 0 else 1


def _classify(address: str, x: np.ndarray, y: np.ndarray, out: Path, show: int) -> None:
    from cnnserve.client import CnnserveClient
    from cnnserve.service.imaging import encode_png

    with CnnserveClient(address) as client:
        _banner(f"Classify RPC: {show} held-out digits sent as PNG images")
        pngs = [encode_png(img) for img in x[:show]]
        answers = {name: client.classify(name, pngs, top_k=2).results for name in MODELS}
        print(f"{'digit':>5}  {'true':>4}  " + "  ".join(f"{name:>22}" for name in MODELS))
        for i in range(show):
            cells = []
            for name in MODELS:
                best = answers[name][i].predictions[0]
                mark = "ok" if best.label == str(y[i]) else "MISS"
                cells.append(f"{best.label} ({best.score:.3f}) {mark:>4}")
            print(f"{i:>5}  {y[i]:>4}  " + "  ".join(f"{c:>22}" for c in cells))

        _banner(f"ModelInfer (KServe v2): all {len(y)} held-out digits as uint8 tensors, 64 per request")
        for name in MODELS:
            predictions = [
                client.infer(name, {"images": x[i : i + 64]})["probabilities"].argmax(axis=1)
                for i in range(0, len(y), 64)
            ]
            accuracy = float((np.concatenate(predictions) == y).mean())
            print(f"{name:>10}: held-out accuracy {accuracy:.4f} ({len(y)} digits never used in training)")

    _banner("cnnserve classify (the command line)")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(3):
        path = out / f"digit_{i}_label_{y[i]}.png"
        path.write_bytes(encode_png(x[i]))
        files.append(str(path))
    subprocess.run(
        [sys.executable, "-m", "cnnserve.cli", "classify", "--server", address, "--model", "mnist_cnn", *files],
        check=True,
    )


def _explain(address: str, out: Path) -> None:
    _banner("cnnserve explain: a heatmap of one held-out digit (the model's default), through the main server")
    digit = sorted(out.glob("digit_0_label_*.png"))[0]  # written by _classify
    subprocess.run(
        [sys.executable, "-m", "cnnserve.cli", "explain", "--server", address, "--model", "mnist_cnn",
         str(digit), "--output-dir", str(out / "explain")],
        check=True,
    )  # fmt: skip
    for path in sorted((out / "explain").rglob("*")):
        if path.is_file():
            print(f"wrote {path}")


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
