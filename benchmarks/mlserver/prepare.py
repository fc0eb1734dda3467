"""Write an MLServer model folder for each model of a Triton-layout repository (same ONNX, same batching).

max_batch_size and the batch delay come from each config.pbtxt, so MLServer's adaptive batching runs with
exactly the limits our dynamic batcher uses; intra_op_thread_count too, for the session. Standard library only (runs under either virtualenv).

    python benchmarks/mlserver/prepare.py --repository /tmp/bench/models --out /tmp/bench/mlserver \
        --grpc-port 18001 --http-port 18080 --parallel-workers 0 mnist_cnn lenet5
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _config(path: Path) -> dict:
    text = path.read_text()
    max_batch = int(re.search(r"max_batch_size:\s*(\d+)", text).group(1))
    delay = re.search(r"max_queue_delay_microseconds:\s*(\d+)", text)
    dims = [int(d) for d in re.search(r"input\s*\[.*?dims:\s*\[([^\]]*)\]", text, re.S).group(1).split(",")]
    out_dims = [int(d) for d in re.search(r"output\s*\[.*?dims:\s*\[([^\]]*)\]", text, re.S).group(1).split(",")]
    threads = re.search(r'key:\s*"intra_op_thread_count"\s*value:\s*\{\s*string_value:\s*"(\d+)"', text)
    return {
        "intra_op_threads": int(threads.group(1)) if threads else 0,
        "max_batch_size": max_batch,
        "delay_s": int(delay.group(1)) / 1e6 if delay else 0.0,
        "in": dims,
        "out": out_dims,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--parallel-workers", type=int, default=0, help="MLServer inference worker processes")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    shutil.copy(HERE / "onnx_runtime.py", args.out / "onnx_runtime.py")
    settings = {
        "grpc_port": args.grpc_port,
        "http_port": args.http_port,
        "host": "127.0.0.1",
        "metrics_endpoint": None,
        "parallel_workers": args.parallel_workers,
        "debug": False,
    }
    (args.out / "settings.json").write_text(json.dumps(settings, indent=2))
    for name in args.models:
        cfg = _config(args.repository / name / "config.pbtxt")
        folder = args.out / name
        folder.mkdir()
        model = {
            "name": name,
            "implementation": "onnx_runtime.OnnxRuntimeModel",
            "max_batch_size": cfg["max_batch_size"],
            "max_batch_time": cfg["delay_s"],
            "parameters": {
                "uri": str((args.repository / name / "1" / "model.onnx").resolve()),
                # The session tuned as cnnserve tunes it (threads, no spinning): the peer gets the same engine.
                "extra": {"intra_op_threads": cfg["intra_op_threads"]},
            },
            "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, *cfg["in"]]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, *cfg["out"]]}],
        }
        (folder / "model-settings.json").write_text(json.dumps(model, indent=2))
    print(f"wrote {args.out} ({', '.join(args.models)})")


if __name__ == "__main__":
    main()
