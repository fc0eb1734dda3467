"""The explainer over gRPC: a real sidecar process, a real main server forwarding to it, real clients.

The repository holds a tiny ONNX model (what the main server classifies with) and, beside it, a small
Keras CNN as model.keras (what the sidecar explains): two different models under one name, which is fine
here because these tests check transport, validation and failure handling; the maps' correctness is
tests/test_explainer_maps.py's job.
"""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.client import CnnserveClient
from cnnserve.client.cli import image_message
from cnnserve.protocol import HEATMAP_METHODS
from cnnserve.protocol import from_float_tensor as from_tensor
from support import (
    DIGITS,
    ExplainerProcess,
    ServerThread,
    add_keras_model,
    png_bytes,
    tiny_digit_model,
    write_model,
    write_pki,
)

pytestmark = pytest.mark.slow
TIMEOUT = 60
DEAD = 3  # conv1 channel made dead: zero kernel, negative bias, ReLU


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("explainer") / "models"
    folder = write_model(root, "digits")
    model = tiny_digit_model(seed=0)
    conv1 = model.get_layer("conv1")
    kernel, bias = (w.numpy() for w in conv1.weights)
    kernel[..., DEAD], bias[DEAD] = 0.0, -1.0
    conv1.set_weights([kernel, bias])
    add_keras_model(folder, model)
    write_model(root, "onnx_only")  # no model.keras: classified, not explainable
    scored = write_model(root, "scored")
    add_keras_model(scored, tiny_digit_model(seed=1))
    meta_path = scored / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["faithfulness"] = SCORED
    meta_path.write_text(json.dumps(meta))
    return root


def _score(layer: str, method: str, score: float, passes: bool) -> dict:
    correlation = 0.1 if passes else 0.9
    return {"layer": layer, "method": method, "deletion_auc": 0.2, "insertion_auc": 0.7, "score": score,
            "randomisation_correlation": correlation, "passes_randomisation": passes, "pointing_game": 0.75,
            "heat_ratio": 2.0, "seconds": 0.5}  # fmt: skip


# metadata.json's faithfulness entry of model "scored" (as explainer/faithfulness.py writes it at export).
SCORED = {
    "schema_version": 1,
    "samples": 64,
    "source": "export: the first 64 parity samples (64 held-out)",
    "scores": [
        _score("conv2", "gradcam", 0.9, True),
        _score("conv2", "score_cam", 1.2, False),
        _score("conv1", "grad_x_activation", 1.1, True),
        _score("conv1", "gradcam_plus_plus", 1.5, False),
        _score("conv1", "score_cam", 0.4, True),
    ],
    "default": {"layer": "conv1", "method": "grad_x_activation", "score": 1.1},
}


@pytest.fixture(scope="module")
def sidecar(repo):
    process = ExplainerProcess(repo).start()
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def main_server(repo, sidecar):
    thread = ServerThread(repo, explainer_address=sidecar.address).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def digits_x():

    return np.load(DIGITS)["x"][:4]


def _stub(address: str) -> tuple[grpc.Channel, pb_grpc.ExplainerStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.ExplainerStub(channel)


def _png_shape(data: bytes) -> tuple:
    return np.asarray(Image.open(io.BytesIO(data))).shape


def test_heatmap_through_the_proxy_equals_the_sidecar(main_server, sidecar, digits_x):
    images = [image_message(png_bytes(digits_x[0]), "png"), image_message(digits_x[1], "raw")]
    request = pb.HeatmapRequest(model_name="digits", images=images, overlay_alpha=0.5)
    with CnnserveClient(main_server.address) as client:
        proxied = pb_grpc.ExplainerStub(client.channel).Heatmap(request, timeout=TIMEOUT)
    channel, direct_stub = _stub(sidecar.address)
    with channel:
        direct = direct_stub.Heatmap(request, timeout=TIMEOUT)
    assert proxied == direct
    assert proxied.layer == "conv2" and proxied.method == pb.HEATMAP_METHOD_GRADCAM and proxied.pre_softmax
    assert [r.id for r in proxied.results] == ["png", "raw"]
    for result in proxied.results:
        heatmap = from_tensor(result.heatmap)
        assert heatmap.shape == (28, 28) and heatmap.dtype == np.float32
        assert np.isfinite(heatmap).all() and 0 <= heatmap.min() and heatmap.max() <= 1
        assert _png_shape(result.overlay_png) == (28, 28, 3)
        assert result.predicted_label == f"class_{result.predicted_class}"
        assert result.target_class == result.predicted_class and result.target_score == result.predicted_score
    target = pb.HeatmapRequest(
        model_name="digits", images=images[:1], target_class=7, method=pb.HEATMAP_METHOD_SCORE_CAM
    )
    with CnnserveClient(main_server.address) as client:
        answer = pb_grpc.ExplainerStub(client.channel).Heatmap(target, timeout=TIMEOUT)
    assert answer.results[0].target_class == 7 and answer.method == pb.HEATMAP_METHOD_SCORE_CAM


def test_activations_filters_and_layers(main_server, digits_x):
    with CnnserveClient(main_server.address) as client:
        stub = pb_grpc.ExplainerStub(client.channel)
        acts = stub.Activations(
            pb.ActivationsRequest(
                model_name="digits", images=[image_message(digits_x[2])], layer="conv1", channels=[0, DEAD, 5]
            ),
            timeout=TIMEOUT,
        )
        assert list(acts.channels) == [0, DEAD, 5] and acts.grid_columns == 2
        result = acts.results[0]
        tensor = from_tensor(result.activations)
        assert tensor.shape == (26, 26, 3) and np.isfinite(tensor).all() and not tensor[..., 1].any()
        assert list(result.dead_channels) == [DEAD]
        grid = np.asarray(Image.open(io.BytesIO(result.grid_png)))
        assert grid.shape == (2 * 27 + 1, 2 * 27 + 1)
        assert not grid[1:27, 28:54].any()  # the dead channel's tile is blank
        assert grid[1:27, 1:27].any()

        request = pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=[2, 0], steps=10, seed=5)
        first = stub.FilterPatterns(request, timeout=TIMEOUT)
        second = stub.FilterPatterns(request, timeout=TIMEOUT)
        assert [p.filter for p in first.patterns] == [2, 0]
        assert [p.cached for p in first.patterns] == [False, False] and all(p.cached for p in second.patterns)
        assert [p.png for p in first.patterns] == [p.png for p in second.patterns]
        assert _png_shape(first.patterns[0].png) == (28, 28)
        request.regularized = True
        assert not any(p.cached for p in stub.FilterPatterns(request, timeout=TIMEOUT).patterns)

        layers = stub.ListLayers(pb.ListLayersRequest(model_name="digits"), timeout=TIMEOUT)
        assert [layer.name for layer in layers.layers] == [
            "rescale",
            "conv1",
            "pool1",
            "conv2",
            "flatten",
            "probabilities",
        ]
        assert layers.default_heatmap_layer == "conv2" and list(layers.input_shape) == [28, 28, 1]
        conv1 = layers.layers[1]
        assert conv1.class_name == "Conv2D" and list(conv1.output_shape) == [-1, 26, 26, 8] and conv1.spatial
        assert not layers.layers[-1].spatial and len(layers.labels) == 10


def test_faithfulness_scores_choose_the_defaults(main_server, digits_x):
    with CnnserveClient(main_server.address) as client:
        stub = pb_grpc.ExplainerStub(client.channel)
        layers = stub.ListLayers(pb.ListLayersRequest(model_name="scored"), timeout=TIMEOUT)
        assert (layers.default_heatmap_layer, layers.default_heatmap_method) == ("conv1", "grad_x_activation")
        assert (layers.faithfulness_samples, layers.faithfulness_source) == (64, SCORED["source"])
        assert [(s.layer, s.method, s.passes_randomisation) for s in layers.faithfulness] == [
            (s["layer"], s["method"], s["passes_randomisation"]) for s in SCORED["scores"]
        ]
        first = layers.faithfulness[0]
        assert first.score == pytest.approx(0.9) and first.pointing_game == pytest.approx(0.75)
        assert first.HasField("pointing_game") and first.randomisation_correlation == pytest.approx(0.1)
        # A model without scores: Grad-CAM at its Grad-CAM layer, and no scores.
        plain = stub.ListLayers(pb.ListLayersRequest(model_name="digits"), timeout=TIMEOUT)
        assert (plain.default_heatmap_layer, plain.default_heatmap_method) == ("conv2", "gradcam")
        assert not plain.faithfulness and plain.faithfulness_samples == 0

        def heatmap(**named):
            request = pb.HeatmapRequest(model_name="scored", images=[image_message(digits_x[0])], **named)
            answer = stub.Heatmap(request, timeout=TIMEOUT)
            return answer.layer, HEATMAP_METHODS[answer.method], answer

        layer, method, answer = heatmap()  # neither named: the scores' default
        assert (layer, method) == ("conv1", "grad_x_activation")
        assert answer.HasField("faithfulness") and answer.faithfulness.score == pytest.approx(1.1)
        # Only the layer named: the best method there that passes the randomisation check.
        assert heatmap(layer="conv2")[:2] == ("conv2", "gradcam")
        # Only the method named: the best layer for it that passes.
        assert heatmap(method=pb.HEATMAP_METHOD_SCORE_CAM)[:2] == ("conv1", "score_cam")
        # Both named: exactly those, even a pair that fails the check (its score says so).
        layer, method, answer = heatmap(layer="conv1", method=pb.HEATMAP_METHOD_GRADCAM_PLUS_PLUS)
        assert (layer, method) == ("conv1", "gradcam_plus_plus") and not answer.faithfulness.passes_randomisation
        # A pair that was not scored: no score in the answer.
        layer, method, answer = heatmap(layer="conv2", method=pb.HEATMAP_METHOD_GRAD_X_ACTIVATION)
        assert (layer, method) == ("conv2", "grad_x_activation") and not answer.HasField("faithfulness")
        plain_map = stub.Heatmap(
            pb.HeatmapRequest(model_name="digits", images=[image_message(digits_x[0])]), timeout=TIMEOUT
        )
        assert (plain_map.layer, plain_map.method) == ("conv2", pb.HEATMAP_METHOD_GRADCAM)


def test_faithfulness_again_on_the_callers_samples(main_server, tmp_path, capsys):
    from cnnserve.cli import main as cli

    x = np.load(DIGITS)["x"][:8]
    request = pb.FaithfulnessRequest(
        model_name="scored",
        images=[image_message(png_bytes(d)) for d in x],
        layers=["conv2"],
        methods=[pb.HEATMAP_METHOD_GRADCAM, pb.HEATMAP_METHOD_GRAD_X_ACTIVATION],
        mask_threshold=127,
        steps=4,
    )
    with CnnserveClient(main_server.address) as client:
        stub = pb_grpc.ExplainerStub(client.channel)
        answer = stub.Faithfulness(request, timeout=TIMEOUT)
        assert answer.samples == 8 and answer.seconds > 0
        assert [(s.layer, s.method) for s in answer.scores] == [("conv2", "gradcam"), ("conv2", "grad_x_activation")]
        for s in answer.scores:
            assert 0 <= s.deletion_auc <= 1 and 0 <= s.insertion_auc <= 1 and s.HasField("pointing_game")
            assert s.passes_randomisation == (s.randomisation_correlation < 0.5)
        passing = [s for s in answer.scores if s.passes_randomisation]
        best = max(passing, key=lambda s: s.score) if passing else None
        assert (answer.best_layer, answer.best_method) == ((best.layer, best.method) if best else ("", ""))
        assert (answer.default_heatmap_layer, answer.default_heatmap_method) == ("conv1", "grad_x_activation")
        # Without a mask threshold: no pointing game; without layers: the candidates (conv2 11x11, conv1 26x26).
        request.ClearField("mask_threshold")
        del request.layers[:]
        del request.methods[:]
        request.methods.append(pb.HEATMAP_METHOD_GRADCAM)
        answer = stub.Faithfulness(request, timeout=TIMEOUT)
        assert [(s.layer, s.method) for s in answer.scores] == [("conv2", "gradcam"), ("conv1", "gradcam")]
        assert not any(s.HasField("pointing_game") for s in answer.scores)
        for bad, words in (
            (pb.FaithfulnessRequest(model_name="scored", images=request.images, layers=["flatten"]), ["spatial"]),
            (pb.FaithfulnessRequest(model_name="scored", images=request.images, mask_threshold=300), ["0..254"]),
            (pb.FaithfulnessRequest(model_name="scored", images=request.images, steps=65), ["0..64"]),
            (pb.FaithfulnessRequest(model_name="scored"), ["no images"]),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.Faithfulness(bad, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert all(w in info.value.details() for w in words), info.value.details()

    # The command: a folder of the user's own images.
    samples = tmp_path / "samples"
    samples.mkdir()
    for i, digit in enumerate(x[:4]):
        (samples / f"digit_{i}.png").write_bytes(png_bytes(digit))
    np.save(samples / "raw.npy", x[4])
    (samples / "notes.txt").write_text("not an image")
    base = ["explain", "--server", main_server.address, "--model", "scored", "--what", "faithfulness"]
    capsys.readouterr()
    assert cli([*base, "--samples", str(samples), "--layer", "conv2", "--method", "gradcam", "--curve-steps", "4",
                "--mask-threshold", "127"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert (
        "5 samples" in out
        and "conv2" in out
        and "gradcam" in out
        and "served default: grad_x_activation at conv1" in out
    )
    assert cli([*base, "--samples", str(samples), "--layer", "conv2", "--method", "gradcam", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["samples"] == 5 and [s["layer"] for s in scored["scores"]] == ["conv2"]
    assert cli([*base, "--samples", str(tmp_path / "nowhere")]) == 2
    assert "--samples DIR" in capsys.readouterr().err


@pytest.mark.parametrize(
    "call, code, words",
    [
        (("ListLayers", pb.ListLayersRequest(model_name="nope")), "NOT_FOUND", ["'nope'", "digits"]),
        (("ListLayers", pb.ListLayersRequest(model_name="onnx_only")), "FAILED_PRECONDITION", ["model.keras"]),
        (("ListLayers", pb.ListLayersRequest(model_name="digits", model_version="9")), "NOT_FOUND", ["'9'"]),
        (
            ("Heatmap", pb.HeatmapRequest(model_name="digits", layer="conv9", images=[image_message(b"x")])),
            "INVALID_ARGUMENT",
            ["'conv9'", "conv1", "conv2"],
        ),
        (
            ("Heatmap", pb.HeatmapRequest(model_name="digits", layer="probabilities", images=[image_message(b"x")])),
            "INVALID_ARGUMENT",
            ["spatial", "conv2"],
        ),
        (
            ("Heatmap", pb.HeatmapRequest(model_name="digits", images=[image_message(np.zeros((5, 5), np.uint8))])),
            "INVALID_ARGUMENT",
            ["[5, 5, 1]", "[28, 28, 1]"],
        ),
        (("Heatmap", pb.HeatmapRequest(model_name="digits")), "INVALID_ARGUMENT", ["no images"]),
        (
            ("Heatmap", pb.HeatmapRequest(model_name="digits", target_class=10, images=[image_message(b"x")])),
            "INVALID_ARGUMENT",
            ["target_class 10"],
        ),
        (
            ("FilterPatterns", pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=[16])),
            "INVALID_ARGUMENT",
            ["[16]", "0..15"],
        ),
        (
            ("FilterPatterns", pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=[0], steps=501)),
            "INVALID_ARGUMENT",
            ["1..500"],
        ),
        (
            ("FilterPatterns", pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=[0], size=4096)),
            "INVALID_ARGUMENT",
            ["size"],
        ),
        (
            ("FilterPatterns", pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=list(range(65)))),
            "INVALID_ARGUMENT",
            ["65 filters"],
        ),
        (
            (
                "FilterPatterns",
                pb.FilterPatternsRequest(
                    model_name="digits", layer="conv2", filters=list(range(16)), steps=500, size=64
                ),
            ),
            "INVALID_ARGUMENT",
            ["exceeds", "limit"],
        ),
    ],
)
def test_errors_have_codes_and_say_what_is_valid(main_server, call, code, words):
    method, request = call
    with CnnserveClient(main_server.address) as client:
        with pytest.raises(grpc.RpcError) as info:
            getattr(pb_grpc.ExplainerStub(client.channel), method)(request, timeout=TIMEOUT)
    assert info.value.code().name == code, info.value.details()
    for word in words:
        assert word in info.value.details()


def test_deadline_reaches_the_sidecar(main_server):
    """16 filters x 500 steps take seconds; the caller gives 0.5 s. The sidecar must stop the ascent at the
    propagated deadline: had it run on, its single worker would finish and cache all 16 patterns before the
    next call on that worker, which would then find filter 0 cached."""
    slow = pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=list(range(16)), steps=500, seed=11)
    with CnnserveClient(main_server.address) as client:
        stub = pb_grpc.ExplainerStub(client.channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.FilterPatterns(slow, timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        again = pb.FilterPatternsRequest(model_name="digits", layer="conv2", filters=[0], steps=500, seed=11)
        (pattern,) = stub.FilterPatterns(again, timeout=TIMEOUT).patterns
        assert not pattern.cached  # computed now: the abandoned ascent stored nothing
        assert stub.FilterPatterns(again, timeout=TIMEOUT).patterns[0].cached  # and the cache does work
        quick = pb.HeatmapRequest(model_name="digits", images=[image_message(np.zeros((28, 28), np.uint8))])
        assert stub.Heatmap(quick, timeout=TIMEOUT).results


def test_sidecar_health_and_reflection(sidecar):
    channel, _ = _stub(sidecar.address)
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "cnnserve.v1.Explainer"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for answer in answers for s in answer.list_services_response.service}
        assert {"cnnserve.v1.Explainer", "grpc.health.v1.Health"} <= names


def test_sidecar_down_then_back(repo, digits_x):
    """Kill the sidecar: classification is untouched, explain calls fail fast with UNAVAILABLE; start it
    again on the same port: the very next call works, nothing restarted on the main server."""
    side = ExplainerProcess(repo).start()
    port = side.grpc_port
    server = ServerThread(repo, explainer_address=side.address).start()
    heatmap = pb.HeatmapRequest(model_name="digits", images=[image_message(digits_x[0])])
    try:
        with CnnserveClient(server.address) as client:
            stub = pb_grpc.ExplainerStub(client.channel)
            assert stub.Heatmap(heatmap, timeout=TIMEOUT).results[0].heatmap.data
            side.kill()
            metrics = server.server.metrics
            for attempt in range(1, 4):
                # Refused by the forwarder itself (no connection within its connect timeout, or the connection
                # lost), not left to run into the caller's deadline.
                with pytest.raises(grpc.RpcError) as info:
                    stub.Heatmap(heatmap, timeout=TIMEOUT)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "explainer" in info.value.details() and "unreachable" in info.value.details()
                assert metrics.count("Heatmap", "UNAVAILABLE") == attempt
                classified = client.classify("digits", [png_bytes(digits_x[0])], top_k=1)
                assert len(classified.results[0].predictions) == 1

            side = ExplainerProcess(repo, port=port).start()
            answer = stub.Heatmap(heatmap, timeout=TIMEOUT)
            assert from_tensor(answer.results[0].heatmap).shape == (28, 28)
            assert client.classify("digits", [png_bytes(digits_x[0])], top_k=1).results

        # SIGTERM: a health watcher hears NOT_SERVING and its stream ends, so the sidecar does not wait out its
        # 5 s grace period for it (the stock HealthServicer keeps Watch streams open until the grace ends).
        channel, _ = _stub(side.address)
        with channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            side.proc.terminate()
            # Ends cleanly: the stock servicer's stream would be cut with CANCELLED when the grace ran out.
            assert [r.status for r in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]
            assert side.proc.wait(30) == 0
    finally:
        server.stop()
        if side.proc.poll() is None:
            side.terminate()


def _secure_stub(address: str, pki, client: str | None = "client", token: str | None = None):
    """A TLS channel trusting the test CA (presenting ``client``'s certificate unless None) and call metadata."""
    from cnnserve.protocol import channel_credentials

    cert, key = (pki / f"{client}.pem", pki / f"{client}.key") if client else (None, None)
    channel = grpc.secure_channel(address, channel_credentials(pki / "ca.pem", cert, key))
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return channel, pb_grpc.ExplainerStub(channel), metadata


def test_sidecar_tls_and_tokens_directly_and_through_the_proxy(repo, tmp_path, digits_x, capsys):
    """A sidecar with mutual TLS and a bearer token: direct callers need both; health stays open; the main
    server reaches it over TLS with its own certificate as client certificate and forwards the caller's token."""

    from cnnserve.cli import main as cli

    pki = write_pki(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text("sidecar-token\n")
    tokens.chmod(0o600)
    side = ExplainerProcess(
        repo, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"), "--auth-token-file", str(tokens),
    ).start()  # fmt: skip
    layers = pb.ListLayersRequest(model_name="digits")
    heatmap = pb.HeatmapRequest(model_name="digits", images=[image_message(digits_x[0])])
    servers = []
    try:
        channel, stub, good = _secure_stub(side.address, pki, token="sidecar-token")
        with channel:
            direct = stub.Heatmap(heatmap, timeout=TIMEOUT, metadata=good)
            assert from_tensor(direct.results[0].heatmap).shape == (28, 28)
            for metadata, why in (((), "missing"), ((("authorization", "Bearer nope"),), "invalid")):
                with pytest.raises(grpc.RpcError) as info:
                    stub.ListLayers(layers, timeout=TIMEOUT, metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert f"{why} bearer token" in info.value.details()
            health = health_pb2_grpc.HealthStub(channel)  # open without a token
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
        for channel, stub, metadata in (
            _secure_stub(side.address, pki, client=None, token="sidecar-token"),  # TLS without a client cert
            (*_stub(side.address), good),  # plaintext
        ):
            with channel, pytest.raises(grpc.RpcError) as info:
                stub.ListLayers(layers, timeout=5, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        # Through the main server: TLS to the sidecar with the server's own (client-capable) certificate.
        main = ServerThread(
            repo, explainer_address=side.address, explainer_tls_ca=pki / "ca.pem",
            tls_cert=pki / "peer.pem", tls_key=pki / "peer.key",
        ).start()  # fmt: skip
        servers.append(main)
        with CnnserveClient(main.address, tls_ca=str(pki / "ca.pem"), token="sidecar-token") as client:
            proxied = pb_grpc.ExplainerStub(client.channel).Heatmap(heatmap, timeout=TIMEOUT)
            assert proxied == direct
        with CnnserveClient(main.address, tls_ca=str(pki / "ca.pem")) as client:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.ExplainerStub(client.channel).Heatmap(heatmap, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
            assert client.classify("digits", [png_bytes(digits_x[0])], top_k=1).results  # the server has no tokens

        # A main server that cannot pass the sidecar's TLS: plaintext, or a certificate only for serving.
        for settings in (
            {},
            {"explainer_tls_ca": pki / "ca.pem", "tls_cert": pki / "server.pem", "tls_key": pki / "server.key"},
        ):
            servers.append(ServerThread(repo, explainer_address=side.address, **settings).start())
            tls = {"tls_ca": str(pki / "ca.pem")} if settings else {}
            with CnnserveClient(servers[-1].address, token="sidecar-token", **tls) as client:
                with pytest.raises(grpc.RpcError) as info:
                    pb_grpc.ExplainerStub(client.channel).ListLayers(layers, timeout=TIMEOUT)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "unreachable" in info.value.details()

        # `cnnserve explain` with --tls-ca/--tls-cert/--tls-key/--token-file.
        token_file = tmp_path / "token"
        token_file.write_text("sidecar-token\n")
        tls_args = ["--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"),
                    "--tls-key", str(pki / "client.key")]  # fmt: skip
        base = ["explain", "--server", side.address, "--model", "digits", "--what", "layers", *tls_args]
        capsys.readouterr()
        assert cli([*base, "--token-file", str(token_file)]) == 0
        assert "default heatmap layer conv2" in capsys.readouterr().out
        assert cli(base) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
    finally:
        for server in servers:
            server.stop()
        side.terminate()
