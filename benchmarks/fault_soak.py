"""Reliability soak: steady load with good and bad requests, and the explainer killed and restarted midway.

    .venv/bin/python benchmarks/fault_soak.py --repository models --model mnist_cnn --seconds 600 --rate 100 \
        --out runs/fault-soak

Bounded: it stops by itself after --seconds. Starts `cnnserve explainer` and `cnnserve serve` on 127.0.0.1
(port 0), then sends --rate requests/s, a fraction --bad of them malformed (each kind must get its own
status code), and a heatmap request through the main server every --explain-every seconds. Halfway it kills
the explainer with SIGKILL and starts it again on the same port --down seconds later. Reports requests and
outcomes by kind and code, explanation outcomes by phase, and the server's RSS over time, in soak.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import psutil

from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc, images_pb2, images_pb2_grpc
from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc
from cnnserve.process import wait_ready
from cnnserve.service.imaging import encode_png


def _start(args: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnserve.cli", *args], stdout=subprocess.PIPE, stderr=log.open("a"), text=True
    )
    return proc, wait_ready(proc)["grpc_port"]


def _requests(model: str, shape: list[int]) -> dict[str, tuple[object, str, str]]:
    """Kinds of request: (message, RPC, expected status code)."""
    n = int(np.prod(shape))

    def infer(mutate=None, name=model):
        r = pb.ModelInferRequest(model_name=name)
        r.inputs.add(name="images", datatype="UINT8", shape=[1, *shape])
        r.raw_input_contents.append(bytes(n))
        if mutate:
            mutate(r)
        return r

    png = encode_png(np.zeros(shape[:2], np.uint8))
    return {
        "good_infer": (infer(), "ModelInfer", "OK"),
        "good_classify": (images_pb2.ClassifyRequest(model_name=model, images=[images_pb2.Image(data=png)]), "Classify", "OK"),
        "bad_shape": (infer(lambda r: r.inputs[0].shape.__setitem__(1, 3)), "ModelInfer", "INVALID_ARGUMENT"),
        "bad_bytes": (infer(lambda r: r.raw_input_contents.__setitem__(0, b"123")), "ModelInfer", "INVALID_ARGUMENT"),
        "bad_dtype": (infer(lambda r: setattr(r.inputs[0], "datatype", "FP32")), "ModelInfer", "INVALID_ARGUMENT"),
        "unknown_model": (infer(name="no_such_model"), "ModelInfer", "NOT_FOUND"),
        "corrupt_png": (images_pb2.ClassifyRequest(model_name=model, images=[images_pb2.Image(data=png[:30])]),
                        "Classify", "INVALID_ARGUMENT"),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, steady")
    parser.add_argument("--bad", type=float, default=0.2, help="fraction of malformed requests")
    parser.add_argument("--explain-every", type=float, default=1.0)
    parser.add_argument("--down", type=float, default=10.0, help="seconds the explainer stays dead")
    parser.add_argument("--sample", type=float, default=5.0, help="RSS sampling interval")
    parser.add_argument("--out", type=Path, default=Path("runs/fault-soak"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "processes.log"
    log.write_text("")

    explainer, explainer_port = _start(["explainer", "--metrics-port", "0", "--model-repository", str(args.repository), "--host",
                                        "127.0.0.1", "--grpc-port", "0"], log)  # fmt: skip
    server, port = _start(["serve", "--model-repository", str(args.repository), "--host", "127.0.0.1",
                           "--grpc-port", "0", "--metrics-port", "-1", "--http-port", "-1",
                           "--explainer-address", f"127.0.0.1:{explainer_port}"], log)  # fmt: skip
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    infer = pb_grpc.GRPCInferenceServiceStub(channel)
    meta = infer.ModelMetadata(pb.ModelMetadataRequest(name=args.model), timeout=10)
    kinds = _requests(args.model, [int(d) for d in meta.inputs[0].shape[1:]])
    stubs = {"ModelInfer": infer.ModelInfer, "Classify": images_pb2_grpc.ImageServiceStub(channel).Classify}
    explain = explainer_pb2_grpc.ExplainerStub(channel).Heatmap
    side = int(meta.inputs[0].shape[1])
    heatmap = explainer_pb2.HeatmapRequest(
        model_name=args.model, images=[explainer_pb2.ExplainImage(encoded=encode_png(np.zeros((side, side), np.uint8)))]
    )

    outcomes: Counter = Counter()
    wrong: Counter = Counter()
    explained: Counter = Counter()
    lock = threading.Lock()
    in_flight = threading.Semaphore(512)
    proc = psutil.Process(server.pid)
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    phase = ["before"]

    def done(kind: str, expected: str, future) -> None:
        in_flight.release()
        code = future.code().name if future.code() is not None else "OK"
        with lock:
            outcomes[(kind, code)] += 1
            if code != expected:
                wrong[(kind, code, future.details() if code != "OK" else "")] += 1

    def explainer_loop() -> None:
        while time.monotonic() - t0 < args.seconds:
            try:
                explain(heatmap, timeout=30)
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
            with lock:
                explained[(phase[0], code)] += 1
            time.sleep(args.explain_every)

    def sampler() -> None:
        while time.monotonic() - t0 < args.seconds:
            samples.append((round(time.monotonic() - t0, 1), proc.memory_info().rss / 2**20))
            time.sleep(args.sample)

    threads = [threading.Thread(target=explainer_loop, daemon=True), threading.Thread(target=sampler, daemon=True)]
    for t in threads:
        t.start()
    names = list(kinds)
    bad_names = [k for k in names if not k.startswith("good")]
    rng = np.random.default_rng(0)
    killed = restarted = False
    sent = 0
    try:
        while (elapsed := time.monotonic() - t0) < args.seconds:
            if not killed and elapsed >= args.seconds / 2:
                explainer.send_signal(signal.SIGKILL)
                explainer.wait()
                killed, phase[0] = True, "down"
                killed_at = time.monotonic()
            if killed and not restarted and time.monotonic() - killed_at >= args.down:
                explainer, _ = _start(["explainer", "--metrics-port", "0", "--model-repository", str(args.repository), "--host",
                                       "127.0.0.1", "--grpc-port", str(explainer_port)], log)  # fmt: skip
                restarted, phase[0] = True, "after"
            kind = rng.choice(bad_names) if rng.random() < args.bad else names[int(rng.integers(0, 2))]
            message, rpc, expected = kinds[kind]
            if in_flight.acquire(timeout=10):
                future = stubs[rpc].future(message, timeout=30)
                future.add_done_callback(lambda f, k=kind, e=expected: done(k, e, f))
                sent += 1
            next_at = t0 + sent / args.rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        for _ in range(512):
            in_flight.acquire(timeout=30)
    finally:
        for t in threads:
            t.join(60)
        channel.close()
        server.send_signal(signal.SIGTERM)
        server_exit = server.wait(60)
        explainer.send_signal(signal.SIGTERM)
        explainer.wait(60)
    rss = [r for _, r in samples]
    settled = next((r for t, r in samples if t >= 60), rss[0])
    result = {
        "seconds": args.seconds,
        "rate": args.rate,
        "requests_sent": sent,
        "outcomes": {f"{k} {c}": n for (k, c), n in sorted(outcomes.items())},
        "unexpected": {f"{k} {c} {d}": n for (k, c, d), n in wrong.items()},
        "explanations": {f"{p} {c}": n for (p, c), n in sorted(explained.items())},
        "rss_mib": {"first": rss[0], "settled_60s": settled, "last": rss[-1], "max": max(rss)},
        "rss_growth_from_settled_percent": round(100 * (rss[-1] - settled) / settled, 2),
        "server_exit": server_exit,
        "rss_samples": samples,
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=1))
    return 0 if not wrong and server_exit == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
