"""TLS, mutual TLS and bearer tokens on a real server, with certificates from a CA the test creates."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve.client import CnnserveClient
from cnnserve.service.access import SecurityConfigError, load_tokens, server_credentials, token_is_valid
from support import ServerThread, png_bytes, write_model, write_pki

ONE = {"images": np.zeros((1, 28, 28, 1), np.uint8)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def repo(tmp_path):
    write_model(tmp_path / "models", "m")
    return tmp_path / "models"


def _code(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_tls_serves_only_clients_that_trust_its_ca(repo, pki):
    server = ServerThread(repo, tls_cert=pki / "server.pem", tls_key=pki / "server.key").start()
    try:
        with CnnserveClient(server.address, tls_ca=str(pki / "ca.pem"), timeout=10) as client:
            assert client.infer("m", ONE)["probabilities"].shape == (1, 10)
        with CnnserveClient(server.address, timeout=3) as plaintext:
            assert _code(lambda: plaintext.infer("m", ONE)) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(repo, pki):
    server = ServerThread(
        repo, tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem"
    ).start()
    try:
        with CnnserveClient(
            server.address, tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "client.pem"),
            tls_key=str(pki / "client.key"), timeout=10,
        ) as client:  # fmt: skip
            assert client.infer("m", ONE)["probabilities"].shape == (1, 10)
        with CnnserveClient(server.address, tls_ca=str(pki / "ca.pem"), timeout=3) as anonymous:
            assert _code(lambda: anonymous.infer("m", ONE)) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_bearer_tokens_guard_everything_but_health_and_reflection(repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# service A\nsecret-one\n\nsecret-two\n")
    tokens.chmod(0o600)
    server = ServerThread(repo, auth_token_file=tokens).start()
    try:
        with CnnserveClient(server.address, token="secret-two", timeout=10) as client:
            assert client.infer("m", ONE)["probabilities"].shape == (1, 10)
            assert client.classify("m", [_png()]).results
        for token in (None, "wrong", "secret-one-and-more"):
            with CnnserveClient(server.address, token=token, timeout=10) as client:
                assert _code(lambda c=client: c.infer("m", ONE)) == grpc.StatusCode.UNAUTHENTICATED
                assert _code(lambda c=client: c.inference.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)) == (
                    grpc.StatusCode.UNAUTHENTICATED
                )
                health = health_pb2_grpc.HealthStub(client.channel)
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING
        with CnnserveClient(server.address, token="secret-one", timeout=10) as client:
            answers = list(client.inference.ModelStreamInfer(iter([_stream_request()]), timeout=10))
            assert not answers[0].error_message
        with CnnserveClient(server.address, timeout=10) as client:
            with pytest.raises(grpc.RpcError) as err:
                list(client.inference.ModelStreamInfer(iter([_stream_request()]), timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in err.value.details()
    finally:
        server.stop()


def test_token_checks_and_bad_settings():
    tokens = load_tokens(None, " a-token , other ")
    assert tokens == (b"a-token", b"other")
    assert token_is_valid("Bearer other", tokens) and not token_is_valid("Bearer othe", tokens)
    assert not token_is_valid("other", tokens) and not token_is_valid(None, tokens)
    with pytest.raises(SecurityConfigError):
        server_credentials(None, None, client_ca="ca.pem")  # type: ignore[arg-type]
    with pytest.raises(SecurityConfigError):
        server_credentials("cert.pem", None, None)  # type: ignore[arg-type]
    assert server_credentials(None, None, None) is None


def _png():

    return png_bytes(np.zeros((28, 28), np.uint8))


def _stream_request():
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28, 1])
    request.raw_input_contents.append(bytes(784))
    return request
