"""Execution providers and their options (CUDA, TensorRT), and I/O binding on the batcher's run.

No GPU here: the CUDA plans are built against a stated list of available providers and checked option by
option; the I/O binding code is the same on the CPU provider, so it runs here end to end through a server.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.client import CnnserveClient
from cnnserve.repository import ModelConfigError, read_model
from cnnserve.server.providers import CPU, CUDA, TENSORRT, CudaOptions, ProviderError, ProviderPlan, plan_providers
from cnnserve.server.runtime import OnnxModel
from cnnserve.server.settings import ServerSettings
from support import ServerThread, write_model

GPU = [CUDA, CPU]


def settings(**fields) -> ServerSettings:
    return ServerSettings(model_repository="models", **fields)


def with_config(folder, extra: str):
    (folder / "config.pbtxt").write_text((folder / "config.pbtxt").read_text() + extra)
    return folder


def parameter(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


def test_cuda_options_from_settings_reach_the_provider():
    plan = plan_providers(
        settings(
            device="cuda",
            cuda_device_id=2,
            cuda_mem_limit=4 << 30,
            cuda_arena_extend_strategy="kSameAsRequested",
            cudnn_conv_algo_search="HEURISTIC",
            cuda_graphs=True,
        ),
        available=GPU,
    )
    assert plan.providers() == [
        (
            CUDA,
            {
                "device_id": "2",
                "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_algo_search": "HEURISTIC",
                "enable_cuda_graph": "1",
                "gpu_mem_limit": str(4 << 30),
            },
        ),
        CPU,
    ]
    assert plan.io_binding and plan.cuda_graph  # auto: I/O binding is on with CUDA


def test_cuda_defaults_are_onnxruntimes_and_tensorrt_is_off():
    plan = plan_providers(settings(device="cuda"), available=[TENSORRT, CUDA, CPU])
    assert plan.provider_names() == [CUDA, CPU]
    assert plan.providers()[0][1] == {
        "device_id": "0",
        "arena_extend_strategy": "kNextPowerOfTwo",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "enable_cuda_graph": "0",
    }
    trt = plan_providers(settings(device="cuda", tensorrt=True, cuda_device_id=1), available=[TENSORRT, CUDA, CPU])
    assert trt.providers()[0] == (TENSORRT, {"device_id": "1"})
    assert trt.provider_names() == [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(
    ("fields", "available", "message"),
    [
        ({"device": "cuda"}, [CPU], "pass --allow-cpu-fallback"),
        ({"device": "cuda", "tensorrt": True}, GPU, "--tensorrt but onnxruntime offers only"),
        ({"device": "cuda", "cuda_graphs": True, "io_binding": "off"}, GPU, "--cuda-graphs needs I/O binding"),
        ({"device": "cuda", "cuda_graphs": True, "tensorrt": True}, [TENSORRT, *GPU], "choose one"),
        ({"cuda_graphs": True, "cuda_device_id": 1}, GPU, "--cuda-device-id, --cuda-graphs apply to --device cuda"),
    ],
)
def test_unavailable_or_contradictory_options_fail_at_start(fields, available, message):
    with pytest.raises(ProviderError, match=message):
        plan_providers(settings(**fields), available=available)


def test_unknown_option_values_are_refused_by_the_settings():
    with pytest.raises(ValueError, match="cudnn_conv_algo_search"):
        settings(device="cuda", cudnn_conv_algo_search="FASTEST")


def test_cpu_fallback_drops_the_cuda_options():
    plan = plan_providers(settings(device="cuda", allow_cpu_fallback=True, cuda_graphs=True), available=[CPU])
    assert plan.providers() == [CPU] and not plan.io_binding and not plan.cuda_graph


def test_a_models_triton_parameters_override_the_server(tmp_path):
    folder = write_model(tmp_path, "m")
    with_config(
        folder,
        parameter("cudnn_conv_algo_search", "1")
        + parameter("arena_extend_strategy", "1")
        + parameter("gpu_mem_limit", "1073741824")
        + parameter("enable_cuda_graph", "1")
        + "instance_group [ { kind: KIND_GPU gpus: [ 3 ] } ]\n",
    )
    (spec,) = read_model(tmp_path, "m")
    plan = plan_providers(settings(device="cuda", cuda_device_id=1), available=GPU).for_model(spec)
    assert plan.cuda == CudaOptions(
        device_id=3,
        mem_limit=1 << 30,
        arena_extend_strategy="kSameAsRequested",
        cudnn_conv_algo_search="HEURISTIC",
        cuda_graph=True,
    )
    cpu = ProviderPlan("cpu")
    assert cpu.for_model(spec) is cpu  # one repository serves on CPU and GPU: the keys are checked, not used


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (parameter("cudnn_conv_algo_search", "7"), "expected one of 0 \\(EXHAUSTIVE\\)"),
        (parameter("arena_extend_strategy", "kDouble"), "'arena_extend_strategy' is 'kDouble'"),
        (parameter("gpu_mem_limit", "4G"), "'gpu_mem_limit' must be a non-negative integer"),
        (parameter("enable_cuda_graph", "yes"), "'enable_cuda_graph' must be 0 or 1"),
        (parameter("execution_mode", "1"), "parameters \\['execution_mode'\\] are not read by cnnserve"),
        ("instance_group [ { kind: KIND_GPU gpus: [ 0, 1 ] } ]\n", "cnnserve serves a model on one GPU"),
    ],
)
def test_wrong_model_parameters_are_refused_on_any_device(tmp_path, extra, message):
    (spec,) = read_model(tmp_path, with_config(write_model(tmp_path, "m"), extra).name)
    with pytest.raises(ModelConfigError, match=message):
        ProviderPlan("cpu").for_model(spec)


def test_a_model_with_a_wrong_parameter_is_unavailable_with_the_reason(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "good")
    with_config(write_model(repo, "bad"), parameter("cudnn_conv_algo_search", "FAST"))
    server = ServerThread(repo).start()
    try:
        entry = server.server.models.models["bad"]
        assert entry.state == "UNAVAILABLE" and "'cudnn_conv_algo_search' is 'FAST'" in entry.reason
        assert server.server.models.models["good"].state == "READY"
    finally:
        server.stop()


def test_io_binding_gives_the_plain_runs_answers_for_every_batch_size(tmp_path):
    write_model(tmp_path, "m", max_batch_size=8)
    (spec,) = read_model(tmp_path, "m")
    plain = OnnxModel(spec, [CPU])
    bound = OnnxModel(spec, ProviderPlan("cpu", io_binding=True))
    rng = np.random.default_rng(1)
    for size in (1, 3, 8, 3):
        images = rng.integers(0, 256, (size, 28, 28, 1), dtype=np.uint8)
        got = bound.run({"images": images})["probabilities"]
        np.testing.assert_array_equal(got, plain.run({"images": images})["probabilities"])
    shapes = {key[0][1][0]: n for key, n in bound.bindings_made.items()}
    assert shapes == {1: 1, 3: 1, 8: 1}  # one set of buffers per batch shape, reused


def test_io_binding_outputs_are_not_overwritten_by_the_next_batch(tmp_path):
    write_model(tmp_path, "m")
    (spec,) = read_model(tmp_path, "m")
    bound = OnnxModel(spec, ProviderPlan("cpu", io_binding=True))
    first = bound.run({"images": np.full((2, 28, 28, 1), 200, np.uint8)})["probabilities"]
    kept = first.copy()
    bound.run({"images": np.zeros((2, 28, 28, 1), np.uint8)})
    np.testing.assert_array_equal(first, kept)


def test_concurrent_batches_of_one_shape_get_buffers_of_their_own(tmp_path):
    write_model(tmp_path, "m")
    (spec,) = read_model(tmp_path, "m")
    plain = OnnxModel(spec, [CPU])
    bound = OnnxModel(spec, ProviderPlan("cpu", io_binding=True))
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8) for _ in range(4)]
    expected = [plain.run({"images": b})["probabilities"] for b in batches]
    barrier = threading.Barrier(len(batches))
    results: list = [None] * len(batches)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(50):
            out = bound.run({"images": batches[i]})["probabilities"]
            if not np.array_equal(out, expected[i]):
                results[i] = out
                return
        results[i] = "ok"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == ["ok"] * len(batches)
    assert 1 <= sum(bound.bindings_made.values()) <= len(batches)


def test_a_server_with_io_binding_warms_every_batch_size_and_serves(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "m", max_batch_size=4)
    (spec,) = read_model(repo, "m")
    plain = OnnxModel(spec, [CPU])
    server = ServerThread(repo, io_binding="on").start()
    try:
        runtime = server.server.models.get("m").runtime
        assert runtime.io_binding
        assert sorted(key[0][1][0] for key in runtime.bindings_made) == [1, 2, 3, 4]  # warm-up made them all
        images = np.random.default_rng(3).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
        with CnnserveClient(server.address, timeout=30) as client:
            got = client.infer("m", {"images": images})["probabilities"]
        np.testing.assert_allclose(got, plain.run({"images": images})["probabilities"], rtol=0, atol=0)
        assert sum(runtime.bindings_made.values()) == 4  # serving reused the warm-up's buffers
    finally:
        server.stop()


def test_the_cpu_provider_is_what_this_machine_has():
    """The tests above exercise CUDA plans without a GPU; a machine with one runs benchmarks/gpu/run.sh."""
    if CUDA in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(ProviderError, match="allow-cpu-fallback"):
        plan_providers(settings(device="cuda"))


def accelerator(name: str, **parameters: str) -> str:
    params = "".join(f' parameters {{ key: "{k}" value: "{v}" }}' for k, v in parameters.items())
    return (
        f'optimization {{ execution_accelerators {{ gpu_execution_accelerator [ {{ name: "{name}"{params} }} ] }} }}\n'
    )


def test_a_models_tensorrt_accelerator_puts_tensorrt_first_with_its_options(tmp_path):
    extra = accelerator("tensorrt", precision_mode="FP16", max_workspace_size_bytes="1073741824")
    (spec,) = read_model(tmp_path, with_config(write_model(tmp_path, "m"), extra).name)
    plan = plan_providers(settings(device="cuda"), available=[TENSORRT, CUDA, CPU]).for_model(spec)
    assert plan.providers()[0] == (
        TENSORRT,
        {"device_id": "0", "trt_fp16_enable": "True", "trt_max_workspace_size": "1073741824"},
    )
    assert plan.provider_names() == [TENSORRT, CUDA, CPU]
    with pytest.raises(ModelConfigError, match="asks for the TensorRT accelerator but onnxruntime offers only"):
        plan_providers(settings(device="cuda"), available=GPU).for_model(spec)
    assert ProviderPlan("cpu").for_model(spec).providers() == [CPU]  # checked, not used, on a CPU server


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (accelerator("openvino"), "gpu_execution_accelerator 'openvino' is not served"),
        (accelerator("tensorrt", precision_mode="INT8"), "precision_mode is 'INT8'; expected FP32 or FP16"),
        (accelerator("tensorrt", trt_engine_cache_enable="1"), "TensorRT parameter 'trt_engine_cache_enable'"),
        (
            'optimization { execution_accelerators { cpu_execution_accelerator [ { name: "openvino" } ] } }\n',
            "cpu_execution_accelerator \\['openvino'\\] is not served",
        ),
    ],
)
def test_wrong_accelerators_are_refused(tmp_path, extra, message):
    (spec,) = read_model(tmp_path, with_config(write_model(tmp_path, "m"), extra).name)
    with pytest.raises(ModelConfigError, match=message):
        ProviderPlan("cpu").for_model(spec)
