"""The sidecar's model table: which layer a heatmap uses when the request names none."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cnnserve.explainer.models import _default_layer, load_version
from cnnserve.repository import read_model
from cnnserve.training import registry
from support import add_keras_model, tiny_digit_model, write_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """tiny_digit_model (conv1 -> pool1 -> conv2 -> flatten -> softmax) served with metadata naming
    ``layers.cam`` = pool1, a spatial layer that is not the last convolution (like mixed10)."""
    root = tmp_path_factory.mktemp("explainer_models") / "models"
    folder = write_model(root, "digits")
    add_keras_model(folder, tiny_digit_model(seed=0))
    meta_path = folder / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["layers"] = {"cam": "pool1", "last_conv": "conv2", "conv": ["conv1", "conv2"]}
    meta_path.write_text(json.dumps(meta))
    (spec,) = read_model(root, "digits")
    return spec, load_version(spec)


def test_default_heatmap_layer_is_the_metadata_cam_layer(loaded):
    spec, entry = loaded
    assert entry.default_layer == "pool1"
    assert entry.model.default_heatmap_layer() == "conv2"  # what it would be without the metadata


def _default(spec, entry, metadata) -> str:
    return _default_layer(dataclasses.replace(spec, metadata=metadata), entry.model)


def test_default_heatmap_layer_falls_back_in_order(loaded, monkeypatch):
    spec, entry = loaded
    # Metadata written before "cam" existed: its last_conv.
    assert _default(spec, entry, {"layers": {"last_conv": "conv1"}}) == "conv1"
    # A cam that is not a spatial layer of this model (missing, or flat): the next candidate.
    assert _default(spec, entry, {"layers": {"cam": "nope", "last_conv": "conv1"}}) == "conv1"
    assert _default(spec, entry, {"layers": {"cam": "flatten", "last_conv": "conv1"}}) == "conv1"
    # No layers recorded: the registry's Grad-CAM layer for the variant, then the last convolution.
    tiny = dataclasses.replace(registry.VARIANTS["mnist_cnn"], name="tiny", cam_layer="pool1")
    monkeypatch.setitem(registry.VARIANTS, "tiny", tiny)
    assert _default(spec, entry, {"variant": "tiny"}) == "pool1"
    assert _default(spec, entry, {"variant": "resnet50"}) == "conv2"  # conv5_block3_out is not in this model
    assert _default(spec, entry, {"variant": "no_such_variant"}) == "conv2"
    assert _default(spec, entry, {}) == "conv2"


def test_faithfulness_default_comes_first_when_it_names_a_spatial_layer_and_a_method(loaded):
    spec, entry = loaded
    layers = {"cam": "pool1", "last_conv": "conv2"}
    scored = {"layers": layers, "faithfulness": {"default": {"layer": "conv1", "method": "score_cam", "score": 1.0}}}
    assert _default(spec, entry, scored) == "conv1"
    version = load_version(dataclasses.replace(spec, metadata=scored))
    assert (version.default_layer, version.default_method) == ("conv1", "score_cam")
    assert version.resolve("", "") == ("conv1", "score_cam") and version.resolve("conv2", "gradcam") == (
        "conv2",
        "gradcam",
    )
    # A default naming a flat layer or an unknown method is ignored: the recorded layers, Grad-CAM.
    for bad in ({"layer": "flatten", "method": "gradcam"}, {"layer": "conv1", "method": "magic"}, None):
        metadata = {"layers": layers, "faithfulness": {"default": bad}}
        version = load_version(dataclasses.replace(spec, metadata=metadata))
        assert (version.default_layer, version.default_method) == ("pool1", "gradcam"), bad
