"""Model lifecycle under load: new versions, reloads, unloads and broken models, with no failed request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve.client import CnnserveClient
from cnnserve.repository import file_sha256
from support import Load, ServerThread, wait_until, write_model

ONE = np.zeros((1, 28, 28, 1), np.uint8)


def _add_version(repo: Path, name: str, version: int, seed: int) -> None:
    """Drop a new version into the repository atomically (build beside it, then rename)."""
    staging = repo.parent / f"staging-{version}"
    write_model(staging, name, version=version, seed=seed)
    shutil.move(str(staging / name / str(version)), str(repo / name / str(version)))


def _served(address: str, name: str) -> list[str]:
    with CnnserveClient(address, timeout=10) as client:
        return list(client.inference.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10).versions)


@pytest.mark.timeout(300)
def test_new_version_by_polling_switches_without_a_failed_request(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "m", version=1)
    server = ServerThread(repo, repository_poll_seconds=0.2).start()
    try:
        with Load(server.address, "m") as load:
            wait_until(lambda: load.total() > 50)
            _add_version(repo, "m", 2, seed=1)
            wait_until(lambda: _served(server.address, "m") == ["2"])
            before = load.versions["2"]
            wait_until(lambda: load.versions["2"] > before + 50)
        assert not load.errors, load.errors
        assert load.versions["1"] > 0 and load.versions["2"] > 0
    finally:
        server.stop()


@pytest.mark.timeout(300)
def test_corrupt_and_parity_failing_models_are_refused_while_the_old_version_serves(tmp_path):
    repo = tmp_path / "models"
    folder = write_model(repo, "m", version=1)
    meta_path = folder / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["hashes"] = {"onnx_sha256": file_sha256(folder / "1" / "model.onnx")}
    meta["parity"] = {"samples": 256, "top1_agreement": 1.0, "max_abs_diff": 2e-7}
    meta_path.write_text(json.dumps(meta))
    server = ServerThread(repo, repository_poll_seconds=0.2).start()
    try:
        with Load(server.address, "m") as load, CnnserveClient(server.address, timeout=10) as client:
            wait_until(lambda: load.total() > 50)
            # Version 2: the model file was replaced after export (hash mismatch).
            _add_version(repo, "m", 2, seed=1)
            meta2 = dict(meta, hashes={"onnx_sha256": "0" * 64})
            (folder / "2" / "metadata.json").write_text(json.dumps(meta2))
            wait_until(lambda: "sha256" in _reason(client, "m"))
            # Version 3: export recorded a parity failure.
            _add_version(repo, "m", 3, seed=2)
            meta3 = dict(meta, parity={"samples": 256, "top1_agreement": 0.99, "max_abs_diff": 0.3},
                         hashes={"onnx_sha256": file_sha256(folder / "3" / "model.onnx")})  # fmt: skip
            (folder / "3" / "metadata.json").write_text(json.dumps(meta3))
            wait_until(lambda: "failed parity" in _reason(client, "m"))
            # An explicit reload of the broken model is refused with the reason, too.
            with pytest.raises(grpc.RpcError) as err:
                client.inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parity" in err.value.details()
            served_after = load.versions["1"]
            wait_until(lambda: load.versions["1"] > served_after + 20)
        assert not load.errors, load.errors
        assert set(load.versions) == {"1"}
    finally:
        server.stop()


def _reason(client: CnnserveClient, name: str) -> str:
    index = client.inference.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    return " ".join(m.reason for m in index.models if m.name == name)


@pytest.mark.timeout(300)
def test_explicit_reload_and_unload_under_load(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "m", version=1)
    write_model(repo, "other", version=1)
    server = ServerThread(repo).start()
    try:
        with Load(server.address, "m") as load, CnnserveClient(server.address, timeout=30) as client:
            wait_until(lambda: load.total() > 50)
            _add_version(repo, "m", 2, seed=1)
            client.inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="m"), timeout=60)
            count = load.versions["2"]
            wait_until(lambda: load.versions["2"] > count + 20)
            # Unloading a neighbour under load does not disturb "m".
            client.inference.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="other"), timeout=60)
        assert not load.errors, load.errors
        assert load.versions["1"] > 0 and load.versions["2"] > 0
    finally:
        server.stop()
