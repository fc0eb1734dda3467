"""Reading the Triton-layout repository: what is served, and clear refusals of what cannot be."""

from __future__ import annotations

import pytest

from cnnserve.repository import ModelConfigError, list_model_names, read_model, validate_model_name
from cnnserve.server.runtime import CPU, ProviderError, choose_providers
from cnnserve.service.errors import InvalidArgument, NotFound
from support import ServerThread, write_model


def test_reads_a_model_folder(tmp_path):
    write_model(tmp_path, "digits", max_batch_size=16, delay_us=2500, queue_size=7)
    (spec,) = read_model(tmp_path, "digits")
    assert (spec.name, spec.version, spec.platform, spec.max_batch_size) == ("digits", "1", "onnxruntime_onnx", 16)
    assert [(t.name, t.datatype, t.dims) for t in spec.inputs] == [("images", "UINT8", (28, 28, 1))]
    assert [(t.name, t.datatype, t.dims) for t in spec.outputs] == [("probabilities", "FP32", (10,))]
    assert spec.max_queue_delay_s == pytest.approx(0.0025) and spec.max_queue_size == 7
    assert spec.labels == tuple(f"class_{i}" for i in range(10))
    assert spec.metadata["preprocessing"]["height"] == 28 and spec.kind == "CPU"
    assert list_model_names(tmp_path) == ["digits"]


def test_latest_version_is_served_and_policies_choose_others(tmp_path):
    folder = write_model(tmp_path, "m", version=1)
    write_model(tmp_path, "m", version=3, seed=1)
    (tmp_path / "m" / "2").mkdir()  # a version folder without a model file is not a version
    assert [s.version for s in read_model(tmp_path, "m")] == ["3"]
    config = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(config + "version_policy { all { } }\n")
    assert [s.version for s in read_model(tmp_path, "m")] == ["3", "1"]
    (folder / "config.pbtxt").write_text(config + "version_policy { specific { versions: [1] } }\n")
    assert [s.version for s in read_model(tmp_path, "m")] == ["1"]


def test_unknown_triton_fields_are_skipped(tmp_path):
    folder = write_model(tmp_path, "m")
    text = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(
        text + "optimization { execution_accelerators { } }\nresponse_cache { enable: false }\n"
    )
    assert read_model(tmp_path, "m")[0].max_batch_size == 8


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t: t.replace('name: "m"', 'name: "other"'), "does not match the folder name"),
        (lambda t: t.replace("onnxruntime_onnx", "tensorflow_savedmodel"), "is not served"),
        (lambda t: t.replace("dims: [ 10 ]", "dims: [ 11 ]"), "10 labels for output"),
        (lambda t: t.replace("max_batch_size: 8", "max_batch_size: -1"), "max_batch_size must be >= 0"),
        (lambda t: t.replace("TYPE_UINT8", "TYPE_STRING"), "unsupported data_type"),
        (lambda t: t.replace("dims: [ 28, 28, 1 ]", "dims: [ 28, 0, 1 ]"), "invalid dims"),
        (lambda t: t + "this is not text format", "config.pbtxt"),
    ],
    ids=["name", "platform", "labels", "batch", "dtype", "dims", "syntax"],
)
def test_bad_configs_are_refused_with_the_reason(tmp_path, edit, fragment):
    folder = write_model(tmp_path, "m")
    (folder / "config.pbtxt").write_text(edit((folder / "config.pbtxt").read_text()))
    with pytest.raises(ModelConfigError) as err:
        read_model(tmp_path, "m")
    assert fragment in str(err.value)


def test_model_names_cannot_leave_the_repository(tmp_path):
    for name in ("../models", "a/b", "..", "", ".hidden", "x" * 200):
        with pytest.raises(InvalidArgument):
            validate_model_name(name)
    with pytest.raises(NotFound):
        read_model(tmp_path, "absent")


def test_cuda_is_refused_unless_fallback_is_allowed():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(ProviderError, match="allow-cpu-fallback"):
        choose_providers("cuda", allow_cpu_fallback=False)
    assert choose_providers("cuda", allow_cpu_fallback=True) == [CPU]
    assert choose_providers("cpu", allow_cpu_fallback=False) == [CPU]


def test_intra_op_thread_count_parameter_sets_the_session_threads(tmp_path):
    """Triton's onnxruntime parameter: read from config.pbtxt, and the session is built with it."""
    from cnnserve.server.runtime import OnnxModel

    folder = write_model(tmp_path, "m")
    (spec,) = read_model(tmp_path, "m")
    assert spec.intra_op_threads == 0  # not set: the server's --intra-op-threads applies
    config = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(
        config + 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    (spec,) = read_model(tmp_path, "m")
    assert spec.intra_op_threads == 1
    model = OnnxModel(spec, [CPU], spec.intra_op_threads)
    assert model.session.get_session_options().intra_op_num_threads == 1
    (folder / "config.pbtxt").write_text(
        config + 'parameters { key: "intra_op_thread_count" value: { string_value: "two" } }\n'
    )
    with pytest.raises(ModelConfigError, match="'intra_op_thread_count' must be a non-negative integer"):
        read_model(tmp_path, "m")


def test_the_models_thread_count_wins_over_the_servers(tmp_path):
    """A served model's session uses its config's intra_op_thread_count; others use --intra-op-threads."""

    folder = write_model(tmp_path, "one")
    write_model(tmp_path, "other")
    config = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(
        config + 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
    )
    thread = ServerThread(tmp_path, intra_op_threads=2).start()
    try:
        threads = {
            name: thread.server.models.get(name, "").runtime.session.get_session_options().intra_op_num_threads
            for name in ("one", "other")
        }
    finally:
        thread.stop()
    assert threads == {"one": 1, "other": 2}
