"""`make compose-test`: docker-compose.yml and the images, built and run for real with podman-compose.

1. build the images one after another (explainer, trainer, server; the GPU image needs a CUDA base: it is
   validated statically by deploy/validate.py);
2. `up -d` with a quick trainer (CNNSERVE_TRAIN_EPOCHS=1, CNNSERVE_TRAIN_LIMIT=512 unless set), ports
   published on 127.0.0.1 only, on free host ports, under its own project name;
3. check that the trainer exited 0, and wait until the health checks of server and explainer pass
   (the probe inside each image, `podman healthcheck run`) and the server answers SERVING from outside;
4. through the published ports: classify held-out digits with our client (PNG via cnnserve.v1 and
   tensors via KServe v2), explain through the server (forwarded to the explainer by service name) and at
   the explainer's own port, then tritonclient in a separate process (it registers the same protobuf
   symbols as our stubs);
5. scrape the metrics port and check that the calls above were counted;
6. stop the server with SIGTERM and check it exits 0; `down -v` (always, also after a failure).

Run by `make compose-test` (as root: podman). Not collected by `pytest tests`.
Environment: COMPOSE_TEST_KEEP=1 leaves the stack up; COMPOSE_TEST_NO_BUILD=1 reuses built images.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("COMPOSE_TEST_PROJECT", "cnnserve-composetest")
MODELS = ("mnist_cnn", "lenet5")
BUILD_ORDER = ("explainer", "trainer", "server")  # the trainer reuses the explainer's TensorFlow layer
HEALTH_TIMEOUT = 600.0


class Failure(Exception):
    pass


def main() -> int:
    compose_bin = shutil.which("podman-compose")
    if compose_bin is None or shutil.which("podman") is None:
        print("compose-test: podman and podman-compose are needed (../shared/tools/podman-setup.sh)", file=sys.stderr)
        return 2
    ports = _free_ports(4)
    env = dict(os.environ)
    env.update(
        CNNSERVE_PUBLISH_ADDRESS="127.0.0.1",
        CNNSERVE_GRPC_HOST_PORT=str(ports[0]),
        CNNSERVE_METRICS_HOST_PORT=str(ports[1]),
        CNNSERVE_EXPLAINER_HOST_PORT=str(ports[2]),
        CNNSERVE_HTTP_HOST_PORT=str(ports[3]),
        CNNSERVE_TAG=os.environ.get("CNNSERVE_TAG", "compose-test"),
    )
    env.setdefault("CNNSERVE_TRAIN_EPOCHS", "1")
    env.setdefault("CNNSERVE_TRAIN_LIMIT", "512")
    env.pop("CNNSERVE_MODELS", None)
    compose = Compose(compose_bin, env)
    timings: dict[str, float] = {}
    started = time.monotonic()
    ok = False
    try:
        compose.run("down", "-v", check=False, quiet=True)  # leftovers of an interrupted run
        if os.environ.get("COMPOSE_TEST_NO_BUILD") != "1":
            for service in BUILD_ORDER:
                with _timed(timings, f"build {service}"):
                    compose.run("--parallel", "1", "build", service, prefix=True)
        with _timed(timings, "up (trainer runs first)"):
            compose.run("up", "-d", prefix=True)
        trainer = compose.container("trainer")
        code = _inspect(trainer)["State"]["ExitCode"]
        print(compose.logs(trainer, tail=12))
        if code != 0:
            raise Failure(f"the trainer exited with status {code}")
        with _timed(timings, "wait for health"):
            server, explainer = compose.container("server"), compose.container("explainer")
            _wait_healthy(compose, [server, explainer])
            _wait_serving(f"127.0.0.1:{ports[0]}")
        with _timed(timings, "calls"):
            _check_calls(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[2]}")
            _check_tritonclient(f"127.0.0.1:{ports[0]}")
            _check_metrics(f"http://127.0.0.1:{ports[1]}/metrics")
            _check_http(f"http://127.0.0.1:{ports[3]}")
        with _timed(timings, "graceful stop"):
            subprocess.run(["podman", "stop", "--time", "30", server], check=True, capture_output=True)
            code = _inspect(server)["State"]["ExitCode"]
            print(compose.logs(server, tail=4))
            if code != 0:
                raise Failure(f"the server exited with status {code} after SIGTERM; expected 0")
            print(f"ok: the server stopped on SIGTERM with status {code}")
        ok = True
    except (Failure, subprocess.CalledProcessError, grpc.RpcError, TimeoutError, AssertionError) as exc:
        print(f"\ncompose-test FAILED: {exc!r}", file=sys.stderr)
        for service in ("trainer", "server", "explainer"):
            name = compose.container(service, missing_ok=True)
            if name:
                print(f"\n--- logs of {service} ---\n{compose.logs(name, tail=60)}", file=sys.stderr)
    finally:
        if os.environ.get("COMPOSE_TEST_KEEP") == "1":
            print(f"COMPOSE_TEST_KEEP=1: the stack {PROJECT} stays up; `podman-compose -p {PROJECT} down -v` ends it")
        else:
            with _timed(timings, "down -v"):
                compose.run("down", "-v", check=False, quiet=True)
    total = time.monotonic() - started
    print("\ncompose-test timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s")
    # The plain closing line CI reads (one compose test).
    print(f"compose-test: {1 if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


class Compose:
    def __init__(self, binary: str, env: dict[str, str]) -> None:
        self.base = [binary, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]
        self.env = env

    def run(self, *args: str, check: bool = True, quiet: bool = False, prefix: bool = False) -> None:
        print(f"$ podman-compose {' '.join(args)}", flush=True)
        out = subprocess.DEVNULL if quiet else None
        subprocess.run([*self.base, *args], cwd=ROOT, env=self.env, check=check, stdout=out, stderr=out)

    def container(self, service: str, missing_ok: bool = False) -> str:
        result = subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}",
             "--filter", f"label=com.docker.compose.project={PROJECT}",
             "--filter", f"label=com.docker.compose.service={service}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        names = result.stdout.split()
        if not names and not missing_ok:
            raise Failure(f"no container for the service {service!r} in the project {PROJECT}")
        return names[0] if names else ""

    @staticmethod
    def logs(container: str, tail: int) -> str:
        result = subprocess.run(["podman", "logs", "--tail", str(tail), container], capture_output=True, text=True)
        return (result.stdout + result.stderr).rstrip()


def _inspect(container: str) -> dict:
    out = subprocess.run(["podman", "inspect", container], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def _wait_healthy(compose: Compose, containers: list[str]) -> None:
    """Run each image's own health check (the compose file's `healthcheck.test`) until it passes."""
    deadline = time.monotonic() + HEALTH_TIMEOUT
    pending = list(containers)
    while pending:
        for name in list(pending):
            state = _inspect(name)["State"]
            if not state.get("Running"):
                raise Failure(f"{name} is not running (status {state.get('Status')}, exit {state.get('ExitCode')})")
            probe = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, text=True)
            if probe.returncode == 0:
                print(f"ok: {name} healthy (the image's gRPC health probe passed)")
                pending.remove(name)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"not healthy after {HEALTH_TIMEOUT:.0f}s: {', '.join(pending)}")
        if pending:
            time.sleep(2)


def _wait_serving(address: str, timeout: float = 60.0) -> None:
    from cnnserve.healthcheck import check_health

    deadline = time.monotonic() + timeout
    while True:
        try:
            serving, answer = check_health(address, timeout=3.0)
            if serving:
                print(f"ok: {address} answers {answer} through the published port")
                return
        except grpc.RpcError as exc:
            answer = exc.code().name
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s (last answer {answer})")
        time.sleep(1)


def _heldout_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(ROOT / "data" / "mnist-8k.npz")
    x, y = data["x"], data["y"]
    return x[-n:], y[-n:]  # the last digits: the quick trainer (--limit 512) trains on far fewer


def _check_calls(server: str, explainer: str) -> None:
    from cnnserve._proto.cnnserve.v1 import explainer_pb2, explainer_pb2_grpc
    from cnnserve.client import CnnserveClient
    from cnnserve.service.imaging import encode_png

    x, y = _heldout_digits(32)
    pngs = [encode_png(img) for img in x[:8]]
    with CnnserveClient(server, timeout=30.0) as client:
        client.wait_ready(timeout=30.0)
        for model in MODELS:
            response = client.classify(model, pngs, top_k=3)
            assert len(response.results) == len(pngs), response
            for result in response.results:
                labels = [p.label for p in result.predictions]
                assert len(labels) == 3 and set(labels) <= {str(d) for d in range(10)}, labels
                scores = [p.score for p in result.predictions]
                assert scores == sorted(scores, reverse=True) and 0.0 <= scores[-1] <= scores[0] <= 1.0, scores
            probs = client.infer(model, {"images": x[..., None]})["probabilities"]
            assert probs.shape == (len(x), 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4), probs.shape
            accuracy = float((probs.argmax(axis=1) == y).mean())
            best = response.results[0].predictions[0]
            print(f"ok: {model}: Classify 8 PNGs (first: {best.label} {best.score:.3f}); ModelInfer 32 digits, "
                  f"accuracy {accuracy:.2f} (1 quick epoch: any value passes)")  # fmt: skip

        # Explanations through the server, which forwards them to the explainer by its service name.
        stub = explainer_pb2_grpc.ExplainerStub(client.channel)
        request = explainer_pb2.HeatmapRequest(
            model_name="mnist_cnn", images=[explainer_pb2.ExplainImage(id="0", encoded=pngs[0])]
        )
        response = stub.Heatmap(request, timeout=120.0)
        assert len(response.results) == 1 and response.results[0].overlay_png.startswith(b"\x89PNG"), response.layer
        print(f"ok: Heatmap through the server -> explainer:8011: layer {response.layer}, "
              f"{len(response.results[0].overlay_png)} byte overlay PNG")  # fmt: skip

    with grpc.insecure_channel(explainer) as channel:
        layers = explainer_pb2_grpc.ExplainerStub(channel).ListLayers(
            explainer_pb2.ListLayersRequest(model_name="lenet5"), timeout=60.0
        )
        assert layers.default_heatmap_layer and any(layer.spatial for layer in layers.layers), layers
        print(f"ok: ListLayers at the explainer's own port: lenet5 has {len(layers.layers)} layers, "
              f"Grad-CAM default {layers.default_heatmap_layer}")  # fmt: skip


def _check_tritonclient(server: str) -> None:
    """NVIDIA's tritonclient in its own process: its protobuf symbols clash with our stubs."""
    script = Path(__file__).with_name("compose_tritonclient.py")
    subprocess.run([sys.executable, str(script), server, *MODELS], check=True, timeout=120)


def _check_metrics(url: str) -> None:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    counted = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        counted[name] = float(value)
    for model in MODELS:
        key = next((k for k in counted if k.startswith("cnnserve_inference_total{") and f'model="{model}"' in k), None)
        assert key is not None and counted[key] > 0, f"no cnnserve_inference_total for {model} in {url}"
    classify = sum(v for k, v in counted.items() if k.startswith("cnnserve_requests_total{") and "Classify" in k)
    infer = sum(v for k, v in counted.items() if k.startswith("cnnserve_requests_total{") and "ModelInfer" in k)
    assert classify >= 2 and infer >= 2, f"cnnserve_requests_total: Classify {classify}, ModelInfer {infer}"
    print(f"ok: metrics at {url}: {len(counted)} series; Classify {classify:.0f}, ModelInfer {infer:.0f} requests")


class _timed:
    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        print(f"\n=== {self.name}", flush=True)
        self.started = time.monotonic()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = time.monotonic() - self.started


def _check_http(url: str) -> None:
    """The published HTTP port: ready, and a v2 JSON infer answered."""
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    models = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(url + "/v2/repository/index", data=b"", method="POST"), timeout=10
        ).read()
    )
    name = models[0]["name"]
    body = {"inputs": [{"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [0] * 784}]}
    request = urllib.request.Request(url + f"/v2/models/{name}/infer", data=json.dumps(body).encode(), method="POST")
    answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert answer["outputs"][0]["shape"][0] == 1, answer
    print(f"compose-test: HTTP {url}: ready, {name} answered a v2 JSON infer")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
