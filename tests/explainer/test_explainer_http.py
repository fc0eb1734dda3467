"""The explainer routes of the HTTP front door: a real sidecar, a real main server, plain HTTP and the CLI."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnserve.cli import main
from support import (
    DIGITS,
    ExplainerProcess,
    Http,
    ServerThread,
    add_keras_model,
    png_bytes,
    tiny_digit_model,
    write_model,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("explainer-http") / "models"
    folder = write_model(root, "digits")
    add_keras_model(folder, tiny_digit_model(seed=0))
    scored = write_model(root, "scored")
    add_keras_model(scored, tiny_digit_model(seed=1))
    meta = json.loads((scored / "1" / "metadata.json").read_text())
    entry = {"layer": "conv1", "method": "grad_x_activation", "deletion_auc": 0.2, "insertion_auc": 0.8,
             "randomisation_correlation": 0.1, "passes_randomisation": True, "score": 0.6, "seconds": 1.0}  # fmt: skip
    meta["faithfulness"] = {"samples": 8, "source": "test", "scores": [entry], "default": {**entry}}
    (scored / "1" / "metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def main_server(repo):
    sidecar = ExplainerProcess(repo).start()
    thread = ServerThread(repo, explainer_address=sidecar.address).start()
    yield thread
    thread.stop()
    sidecar.terminate()


@pytest.fixture(scope="module")
def image() -> bytes:
    return png_bytes(np.load(DIGITS)["x"][0].reshape(28, 28))


def test_heatmap_as_json_and_as_png(main_server, image):
    with Http(main_server.server.http_port, timeout=120) as http:
        body = {"image": base64.b64encode(image).decode(), "method": "gradcam_plus_plus", "target_class": 3}
        status, answer = http.json("POST", "/v1/models/digits/explain/heatmap", body)
        assert status == 200, answer
        assert answer["model_name"] == "digits" and answer["method"] == "gradcam_plus_plus"
        assert answer["target_class"] == 3 and answer["predicted_label"] == f"class_{answer['predicted_class']}"
        h, w = answer["heatmap"]["shape"]
        assert len(answer["heatmap"]["data"]) == h * w
        overlay = Image.open(io.BytesIO(base64.b64decode(answer["overlay_png"])))
        assert overlay.size == (28, 28)
        # the image itself as the body, the fields as query parameters, the overlay PNG as the answer
        status, head, data = http.call(
            "POST",
            "/v1/models/digits/explain/heatmap?method=gradcam&overlay_alpha=0.5",
            image,
            {"Content-Type": "image/png", "Accept": "image/png"},
        )
        assert status == 200 and head["content-type"] == "image/png" and data.startswith(b"\x89PNG")


def test_faithfulness_scores_as_json(main_server, image):
    """ListLayers' scores and a heatmap's own score over HTTP; an unset pointing game is absent, not 0."""
    with Http(main_server.server.http_port, timeout=120) as http:
        status, layers = http.json("GET", "/v1/models/scored/explain/layers")
        assert status == 200 and layers["default_heatmap_method"] == "grad_x_activation"
        (entry,) = layers["faithfulness"]
        assert entry["layer"] == "conv1" and entry["passes_randomisation"] is True and "pointing_game" not in entry
        status, answer = http.json(
            "POST", "/v1/models/scored/explain/heatmap", {"image": base64.b64encode(image).decode()}
        )
        assert status == 200 and (answer["layer"], answer["method"]) == ("conv1", "grad_x_activation")
        assert answer["faithfulness"]["score"] == pytest.approx(0.6)
        status, plain = http.json(
            "POST", "/v1/models/digits/explain/heatmap", {"image": base64.b64encode(image).decode()}
        )
        assert status == 200 and plain["method"] == "gradcam" and "faithfulness" not in plain


def test_layers_activations_and_filters(main_server, image):
    with Http(main_server.server.http_port, timeout=120) as http:
        status, layers = http.json("GET", "/v1/models/digits/explain/layers")
        assert status == 200 and layers["model_name"] == "digits"
        names = [layer["name"] for layer in layers["layers"]]
        assert "conv1" in names and all(isinstance(d, int) for d in layers["layers"][0]["output_shape"])
        body = {"image": base64.b64encode(image).decode(), "layer": "conv1", "channels": [0, 2]}
        status, acts = http.json("POST", "/v1/models/digits/explain/activations", body)
        assert status == 200 and acts["layer"] == "conv1" and acts["channels"] == [0, 2]
        assert base64.b64decode(acts["grid_png"]).startswith(b"\x89PNG") and isinstance(acts["dead_channels"], list)
        status, pats = http.json(
            "POST", "/v1/models/digits/explain/filters", {"layer": "conv2", "filters": [1], "steps": 5, "seed": 2}
        )
        assert status == 200 and [p["filter"] for p in pats["patterns"]] == [1]
        assert base64.b64decode(pats["patterns"][0]["png"]).startswith(b"\x89PNG")
        status, error = http.json("POST", "/v1/models/digits/explain/activations", {**body, "layer": "nope"})
        assert status == 400 and "nope" in error["error"]  # the sidecar's INVALID_ARGUMENT, passed on


def test_cli_classify_and_explain_over_http(main_server, tmp_path, capsys):
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(np.load(DIGITS)["x"][1].reshape(28, 28)))
    url = f"http://127.0.0.1:{main_server.server.http_port}"
    assert main(["classify", "--server", url, "--model", "digits", "--json", "--top-k", "2", str(path)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["image"] == str(path) and len(line["predictions"]) == 2
    out = tmp_path / "out"
    assert main(["explain", "--server", url, "--model", "digits", str(path), "--output-dir", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert (out / "digit" / "overlay.png").is_file() and np.load(out / "digit" / "heatmap.npy").ndim == 2
    assert line["predicted"]["label"].startswith("class_")
    assert main(["explain", "--server", url, "--model", "digits", "--what", "layers"]) == 0
    assert "conv1" in capsys.readouterr().out
    assert main(["classify", "--server", url, "--model", "nope", str(path)]) == 1
    assert "HTTP 404" in capsys.readouterr().err
