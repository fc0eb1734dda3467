"""The test helpers every area shares: model repositories, servers in a thread or a process, load, Keras models.

No cnnserve or TensorFlow import at module level: both test processes (tests/ and tests/compat/) import it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "data" / "mnist-8k.npz"


def tiny_onnx(
    path: Path,
    *,
    height: int = 28,
    width: int = 28,
    channels: int = 1,
    classes: int = 10,
    seed: int = 0,
    batch_dimension: bool = True,
    fixed_batch: int = 0,
):
    """A real ONNX classifier: uint8 NHWC images -> x/255 -> dense -> softmax, with a dynamic batch (or, without
    ``batch_dimension``, one image [H, W, C] -> probabilities [K], as Triton's max_batch_size 0 describes; or,
    with ``fixed_batch``, a first dimension of that fixed size, as a graph exported for batch 1)."""
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
        helper.make_node("Softmax", ["logits"], ["scores" if not batch_dimension else "probabilities"], axis=-1),
    ]
    if not batch_dimension:
        nodes.append(helper.make_node("Reshape", ["scores", "classes"], ["probabilities"]))
    inits = [
        numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([classes], dtype=np.int64), "classes"),
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    lead = [fixed_batch] if fixed_batch else (["batch"] if batch_dimension else [])
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [*lead, height, width, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [*lead, classes])],
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
    tiny_onnx(folder / str(version) / "model.onnx", classes=classes, seed=seed, batch_dimension=max_batch_size > 0)
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


def write_pki(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and "peer": a server
    certificate that may also authenticate as a client (a main server calling a mutual-TLS sidecar)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path):
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("cnnserve test CA"))
        .issuer_name(name("cnnserve test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn, usage, san=None):
        usage = usage if isinstance(usage, list) else [usage]
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (folder / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, folder / f"{cn}.key")

    leaf("server", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])  # fmt: skip
    leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH)
    leaf("peer", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])  # fmt: skip
    return folder


def wait_until(predicate, what: str = "the condition", timeout: float = 120.0) -> None:
    """Poll ``predicate`` until it holds (a state to reach, not a speed to assert); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"never happened within {timeout:.0f} s: {what}")


class ChildProcess:
    """A `cnnserve` command as a real subprocess on 127.0.0.1 port 0; reads its ports from its ready line."""

    command: tuple[str, ...] = ()

    def __init__(self, repository: Path, *extra: str, port: int = 0) -> None:
        self.args = [
            sys.executable, "-m", "cnnserve.cli", *self.command, "--model-repository", str(repository),
            "--host", "127.0.0.1", "--grpc-port", str(port), *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.grpc_port = 0
        self.ready: dict = {}

    def start(self, timeout: float = 120) -> ChildProcess:
        from cnnserve.process import wait_ready

        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.ready = wait_ready(self.proc, timeout)
        self.grpc_port = self.ready["grpc_port"]
        return self

    stderr = subprocess.PIPE

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


class ServerProcess(ChildProcess):
    """`cnnserve serve`, its metrics on a port of its own choosing (``metrics_port``)."""

    command = ("serve", "--metrics-port", "0", "--http-port", "0")

    @property
    def metrics_port(self) -> int:
        return self.ready["metrics_port"]


class ExplainerProcess(ChildProcess):
    """`cnnserve explainer` (TensorFlow's log lines discarded)."""

    command = ("explainer", "--metrics-port", "0")
    stderr = subprocess.DEVNULL

    @property
    def metrics_port(self) -> int:
        return self.ready["metrics_port"]


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


class ServerThread:
    """A real CnnServer on 127.0.0.1 port 0, run by its own event loop in a thread."""

    def __init__(self, repository: Path, **settings) -> None:
        from cnnserve.server.app import CnnServer
        from cnnserve.server.settings import ServerSettings

        ports = {"grpc_port": 0, "metrics_port": 0, "http_port": 0, **settings}
        self.settings = ServerSettings(model_repository=repository, host="127.0.0.1", **ports)
        self.server = CnnServer(self.settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced to the test in start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_until_complete(self.server.wait())

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.wait(120)
        if self._error is not None:
            raise self._error
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def call(self, coro, timeout: float = 60):
        """Run a coroutine on the server's loop (e.g. models.load) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(60)
            self._thread.join(30)
        self.loop.close()


def tiny_digit_model(seed: int = 0):
    """An untrained digit CNN of the served kind: uint8 [28, 28, 1] -> softmax(10)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    images = keras.Input((28, 28, 1), dtype="uint8", name="images")
    x = layers.Rescaling(1 / 255, name="rescale")(images)
    x = layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(images, out, name="tiny_digits")


def add_keras_model(folder: Path, model, version: int = 1) -> Path:
    """Save ``model`` as NAME/VERSION/model.keras beside a repository model written by support.write_model."""
    path = folder / str(version) / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


class Http:
    """A plain HTTP/1.1 client on one keep-alive connection (http.client), for the HTTP front door's tests.

    ``call`` returns (status, headers as a lowercase dict, body bytes); ``json`` decodes the body as well.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0, **connection) -> None:
        import http.client

        if connection.get("context") is not None:
            self.conn = http.client.HTTPSConnection(host, port, timeout=timeout, **connection)
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method: str, path: str, value=None, headers: dict | None = None):
        body = None if value is None else json.dumps(value).encode()
        status, head, data = self.call(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        return status, (json.loads(data) if data else None)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def raw_http(port: int, data: bytes, *, timeout: float = 30.0, host: str = "127.0.0.1", then: bytes | None = None):
    """Send ``data`` as it is on a fresh connection; read one answer (status, lowercase headers, body).

    With ``then``, send it on the same connection afterwards and return both answers (the second None when the
    server closed the connection, as it does after a malformed request)."""
    import socket

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        first = _read_answer(reader)
        if then is None:
            return first
        try:
            sock.sendall(then)
            second = _read_answer(reader)
        except (OSError, ConnectionError, ValueError):
            second = None
        return first, second


def _read_answer(reader):
    status_line = reader.readline()
    if not status_line:
        raise ConnectionError("connection closed without an answer")
    status = int(status_line.split()[1])
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return status, headers, body


def pytorch_style_onnx(path: Path, *, size: int = 32, classes: int = 5, fixed_batch: int = 0, seed: int = 0):
    """An ONNX graph as ``torch.onnx.export`` writes one: float32 NCHW ``input.1`` [batch_size, 3, size, size]
    (mean/std done by the caller), Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, logits ``logits``
    [batch_size, K], a named dynamic batch dimension (or ``fixed_batch``). Returns the model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.3, size=(8, 3, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, size=(8,)).astype(np.float32)
    fc_w = rng.normal(0, 0.5, size=(classes, 8)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, size=(classes,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input.1", "conv.weight", "conv.bias"], ["/conv/Conv_output_0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["/conv/Conv_output_0"], ["/relu/Relu_output_0"]),
        helper.make_node("GlobalAveragePool", ["/relu/Relu_output_0"], ["/pool/GlobalAveragePool_output_0"]),
        helper.make_node("Flatten", ["/pool/GlobalAveragePool_output_0"], ["/Flatten_output_0"], axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    batch = fixed_batch or "batch_size"
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [
            numpy_helper.from_array(conv_w, "conv.weight"),
            numpy_helper.from_array(conv_b, "conv.bias"),
            numpy_helper.from_array(fc_w, "fc.weight"),
            numpy_helper.from_array(fc_b, "fc.bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return model
