"""Serve your own CNN: models this project did not define, built here as a user would, each through
`cnnserve export --keras/--onnx` (or dropped in as a bare model.onnx) -> `cnnserve serve` -> NVIDIA's tritonclient
ModelInfer (values checked against the original model run directly with the same preprocessing) -> `cnnserve
classify` with labels -> `cnnserve explain` heatmap where it applies. Bad command input installs nothing.

In the compat process (tritonclient's protobuf symbols): cnnserve runs only as subprocesses, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support import ExplainerProcess, ServerProcess, png_bytes, pytorch_style_onnx, tiny_onnx

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # six exports, MobileNetV2 among them

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def cnnserve(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "cnnserve.cli", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"cnnserve {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def write_labels(path: Path, labels: list[str]) -> Path:
    path.write_text("".join(f"{label}\n" for label in labels))
    return path


def keras_models(folder: Path) -> dict:
    """The issue's three Keras models, untrained (seeded), saved as a user saves them; with their references."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=5)
    mobilenet.save(folder / "mobilenet.keras")
    images = keras.Input((32, 32, 3), name="pixels01")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(images)
    y = layers.Conv2D(8, 3, padding="same", name="branch")(x)
    x = layers.Activation("relu", name="merged")(layers.Add(name="residual")([x, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    residual = keras.Model(images, layers.Dense(4, activation="softmax", name="classes")(x), name="residual_cnn")
    residual.save(folder / "residual.keras")
    sequential = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(4, 3, activation="relu", name="conv"),
            layers.MaxPooling2D(name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(3, name="logits"),
        ],
        name="seq_logits",
    )
    sequential.save(folder / "sequential.keras")
    return {
        # caffe-style: BGR, mean subtraction on 0-255 pixels
        "mobilenet": lambda x: mobilenet.predict(
            x[..., ::-1].astype(np.float32) - np.float32(CAFFE_MEAN_BGR), verbose=0
        ),
        "residual": lambda x: residual.predict(x.astype(np.float32) / 255, verbose=0),
        "sequential": lambda x: softmax(sequential.predict(x.astype(np.float32) / 255, verbose=0)),
    }


def onnx_reference(path: Path, mean=None, std=None, nchw: bool = True, apply_softmax: bool = False):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        fed = x.astype(np.float32) / 255 if mean is not None else x
        if mean is not None:
            fed = (fed - np.float32(mean)) / np.float32(std)
        if nchw:
            fed = np.ascontiguousarray(fed.transpose(0, 3, 1, 2))
        out = np.concatenate([session.run(None, {name: fed[i : i + 1]})[0] for i in range(len(fed))])
        return softmax(out) if apply_softmax else out

    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Everything exported or dropped into one repository, served by `cnnserve serve` with its explainer."""
    work = tmp_path_factory.mktemp("own")
    repo = work / "models"
    refs = keras_models(work)
    labels = {
        "mobilenet": ["tench", "goldfish", "shark", "ray", "hen"],
        "residual": ["circle", "square", "star", "cross"],
        "sequential": ["zero", "one", "two"],
        "pytorch": ["cat", "dog", "fox", "owl", "bee"],
        "fixed": ["red", "green", "blue", "grey", "none"],
        "bare": [f"digit {i}" for i in range(10)],
    }
    files = {k: write_labels(work / f"{k}.txt", v) for k, v in labels.items()}
    common = ["--model-repository", repo]
    cnnserve("export", "--keras", work / "mobilenet.keras", "--name", "mobilenet", "--labels", files["mobilenet"],
             "--bgr", "--scale", "1", "--mean", ",".join(map(str, CAFFE_MEAN_BGR)), *common)  # fmt: skip
    cnnserve("export", "--keras", work / "residual.keras", "--name", "residual", "--labels", files["residual"], *common)
    samples = np.random.default_rng(1).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    np.save(work / "digits.npy", samples)
    seq = cnnserve("export", "--keras", work / "sequential.keras", "--name", "sequential", "--softmax", "--labels",
                   files["sequential"], "--samples", work / "digits.npy", *common)  # fmt: skip
    pytorch_style_onnx(work / "pytorch.onnx")
    cnnserve("export", "--onnx", work / "pytorch.onnx", "--name", "pytorch", "--labels", files["pytorch"],
             "--mean", ",".join(map(str, IMAGENET_MEAN)), "--std", ",".join(map(str, IMAGENET_STD)), "--softmax",
             *common)  # fmt: skip
    pytorch_style_onnx(work / "fixed.onnx", fixed_batch=1, seed=2)
    cnnserve("export", "--onnx", work / "fixed.onnx", "--name", "fixed", "--labels", files["fixed"], *common)
    tiny_onnx(repo / "bare" / "1" / "model.onnx", seed=5)  # dropped in: no config.pbtxt, no metadata.json
    (repo / "bare" / "labels.txt").write_text(files["bare"].read_text())
    refs["pytorch"] = onnx_reference(work / "pytorch.onnx", IMAGENET_MEAN, IMAGENET_STD, apply_softmax=True)
    refs["fixed"] = onnx_reference(work / "fixed.onnx", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    refs["bare"] = onnx_reference(repo / "bare" / "1" / "model.onnx", nchw=False)

    explainer = ExplainerProcess(repo).start()
    server = ServerProcess(repo, "--explainer-address", explainer.address).start()
    yield {"work": work, "repo": repo, "refs": refs, "labels": labels, "server": server, "seq_stdout": seq.stdout}
    assert server.terminate() == 0
    explainer.terminate()


SHAPES = {
    "mobilenet": (96, 96, 3),
    "residual": (32, 32, 3),
    "sequential": (28, 28, 1),
    "pytorch": (32, 32, 3),
    "fixed": (32, 32, 3),
    "bare": (28, 28, 1),
}
OUTPUTS = {"sequential": "probabilities", "pytorch": "probabilities", "fixed": "logits"}


def images(model: str, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPES[model]), dtype=np.uint8)


@pytest.mark.parametrize("model", sorted(SHAPES))
def test_model_infer_through_tritonclient_matches_the_original_model(world, model):
    client = grpcclient.InferenceServerClient(world["server"].address)
    config = client.get_model_config(model).config
    output = config.output[0].name
    assert output == OUTPUTS.get(model, "probabilities")
    meta = client.get_model_metadata(model, as_json=True)
    assert meta["inputs"][0]["datatype"] == "UINT8"
    fixed = config.max_batch_size == 0
    assert fixed == (model == "fixed")
    x = images(model, 1 if fixed else 3)
    inp = grpcclient.InferInput(config.input[0].name, list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    got = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(output)]).as_numpy(output)
    np.testing.assert_allclose(got, world["refs"][model](x), rtol=1e-4, atol=1e-5)
    client.close()


def test_configs_and_metadata_record_what_the_client_sends(world):
    repo = world["repo"]
    pytorch = json.loads((repo / "pytorch" / "1" / "metadata.json").read_text())
    assert pytorch["client_sends"].startswith("UINT8 [N, 32, 32, 3] raw pixels")
    assert pytorch["source"]["input"] == {"name": "input.1", "datatype": "FP32", "shape": ["batch_size", 3, 32, 32],
                                          "layout": "NCHW"}  # fmt: skip
    assert pytorch["preprocessing"]["mean"] == pytest.approx(IMAGENET_MEAN)
    assert pytorch["explainable"]["available"] is False and pytorch["trial"]["max_abs_diff"] <= 1e-4
    seq = json.loads((repo / "sequential" / "1" / "metadata.json").read_text())
    assert seq["parity"]["top1_agreement"] == 1.0 and seq["parity"]["max_abs_diff"] <= 1e-4
    assert seq["parity"]["composition"] == {"given": 40, "generated": 216, "images": seq["parity"]["images"]}
    assert "40 images of" in seq["parity"]["images"] and "216 generated" in world["seq_stdout"]
    mobilenet = json.loads((repo / "mobilenet" / "1" / "metadata.json").read_text())
    assert mobilenet["preprocessing"]["bgr"] is True and mobilenet["layers"]["cam"]
    assert "256 generated images" in mobilenet["parity"]["images"]
    assert sorted(p.name for p in (repo / "mobilenet" / "1").iterdir()) == [
        "metadata.json", "model.keras", "model.onnx", "model.savedmodel",
    ]  # fmt: skip
    client = grpcclient.InferenceServerClient(world["server"].address)
    bare = client.get_model_config("bare").config
    assert bare.max_batch_size == 4 and bare.output[0].label_filename == "labels.txt"
    client.close()


@pytest.mark.parametrize("model", ["mobilenet", "residual", "sequential", "pytorch", "fixed"])
def test_classify_names_the_labels(world, model, tmp_path):
    x = images(model, 2, seed=7)
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"{model}-{i}.png")
        paths[-1].write_bytes(png_bytes(image[..., 0] if image.shape[-1] == 1 else image))
    if model == "fixed":
        paths = paths[:1]  # a fixed batch of 1 takes one image per request
    out = cnnserve("classify", *paths, "--server", world["server"].address, "--model", model, "--top-k", 2, "--json")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    expected = world["refs"][model](x[: len(paths)])
    for line, row in zip(lines, expected, strict=True):
        best = int(np.argmax(row))
        assert line["predictions"][0] == {
            "label": world["labels"][model][best],
            "index": best,
            "score": pytest.approx(float(row[best]), abs=1e-4),
        }


def test_bare_model_without_metadata_is_refused_by_classify(world, tmp_path):
    (tmp_path / "d.png").write_bytes(png_bytes(images("bare", 1)[0, ..., 0]))
    out = cnnserve("classify", tmp_path / "d.png", "--server", world["server"].address, "--model", "bare", check=False)
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr and "metadata.json" in out.stderr


@pytest.mark.parametrize("model", ["mobilenet", "residual", "sequential"])
def test_heatmap_of_keras_models(world, model, tmp_path):
    x = images(model, 1, seed=3)
    path = tmp_path / f"{model}.png"
    path.write_bytes(png_bytes(x[0, ..., 0] if x.shape[-1] == 1 else x[0]))
    out = cnnserve("explain", path, "--server", world["server"].address, "--model", model, "--output-dir", tmp_path)
    (line,) = [json.loads(line) for line in out.stdout.splitlines()]
    meta = json.loads((world["repo"] / model / "1" / "metadata.json").read_text())
    assert line["layer"] == meta["layers"]["cam"]
    best = int(np.argmax(world["refs"][model](x)[0]))
    assert line["predicted"]["class"] == best and line["predicted"]["label"] == world["labels"][model][best]
    assert Path(line["overlay"]).stat().st_size > 0 and np.load(line["heatmap"]).shape == SHAPES[model][:2]


@pytest.mark.parametrize("model", ["pytorch", "fixed", "bare"])
def test_heatmap_of_onnx_only_models_names_the_missing_keras(world, model, tmp_path):
    x = images(model, 1)
    path = tmp_path / f"{model}.png"
    path.write_bytes(png_bytes(x[0, ..., 0] if x.shape[-1] == 1 else x[0]))
    out = cnnserve("explain", path, "--server", world["server"].address, "--model", model, check=False)
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr and "model.keras" in out.stderr


def test_tritonclient_sees_a_clear_refusal_of_a_second_image_for_the_fixed_batch_model(world):
    client = grpcclient.InferenceServerClient(world["server"].address)
    inp = grpcclient.InferInput("images", [2, 32, 32, 3], "UINT8")
    inp.set_data_from_numpy(images("fixed", 2))
    with pytest.raises(InferenceServerException) as err:
        client.infer("fixed", [inp])
    assert "INVALID_ARGUMENT" in str(err.value.status())
    client.close()
