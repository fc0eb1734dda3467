"""`make console`: serve the repository `make demo` wrote (models/) with the explainer beside it, and print the
address of the web console. Ctrl-C (or SIGTERM) stops both.

Options: --model-repository DIR (default models/), --host (default 127.0.0.1), --http-port (default 8000),
--grpc-port (default 8001).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    args = parser.parse_args()
    if not any(args.model_repository.glob("*/config.pbtxt")) and not any(args.model_repository.glob("*/*/model.onnx")):
        print(f"no models in {args.model_repository}: run `make demo` first (it trains and exports them)")
        return 1

    from cnnserve.process import wait_ready

    cli = [sys.executable, "-m", "cnnserve.cli"]
    repo = ["--model-repository", str(args.model_repository)]
    explainer = subprocess.Popen([*cli, "explainer", *repo, "--host", "127.0.0.1", "--grpc-port", "0"],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
    server = None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        sidecar = f"127.0.0.1:{wait_ready(explainer)['grpc_port']}"
        server = subprocess.Popen(
            [*cli, "serve", *repo, "--host", args.host, "--grpc-port", str(args.grpc_port), "--metrics-port", "0",
             "--http-port", str(args.http_port), "--explainer-address", sidecar],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        ready = wait_ready(server)
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(f"\nThe console: http://{host}:{ready.get('http_port', args.http_port)}/console/")
        print(f"gRPC on {host}:{ready['grpc_port']}, explainer on {sidecar}. Ctrl-C stops both.", flush=True)
        while not stop.wait(1.0):
            if server.poll() is not None or explainer.poll() is not None:
                print("a child process exited; stopping")
                break
    finally:
        for proc in (server, explainer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in (server, explainer) if proc is not None]
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
