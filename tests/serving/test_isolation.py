"""Workload isolation: device selection, device nodes and vLLM arguments. Pure."""

from __future__ import annotations

import pytest

from serving.isolation import DeviceBinding, IsolationError, gpu_memory_utilization, workload_spec


def binding(logical: int, gpu: int = 0, part: int = 0, memory: float = 24.0, render: str | None = "auto") -> DeviceBinding:
    return DeviceBinding(node="n1", gpu_index=gpu, partition_index=part, logical_index=logical,
                         render_node=f"renderD{128 + logical}" if render == "auto" else render, memory_gb=memory)


def test_a_cpx_partition_of_the_second_gpu():
    # GPU 0 and GPU 1 in CPX: GPU 1 partition 5 is logical device 8 + 5 = 13.
    spec = workload_spec(bindings=[binding(13, gpu=1, part=5)], model_id="meta-llama/Llama-3.1-8B-Instruct",
                         memory_required_gb=19.45, max_model_len=8192)
    assert spec.env == {"ROCR_VISIBLE_DEVICES": "13"}
    assert spec.alternative_env == {"HIP_VISIBLE_DEVICES": "13"}
    assert spec.devices == ("/dev/kfd", "/dev/dri/renderD141")
    assert spec.args == ("meta-llama/Llama-3.1-8B-Instruct", "--tensor-parallel-size", "1",
                         "--gpu-memory-utilization", "0.82", "--max-model-len", "8192")
    assert spec.container["command"][:2] == ["vllm", "serve"]
    assert spec.container["environment"] == {}  # inside the container only its devices exist


def test_tensor_parallel_over_two_whole_gpus():
    spec = workload_spec(bindings=[binding(3, gpu=3, memory=192), binding(2, gpu=2, memory=192)],
                         model_id="m", memory_required_gb=120.0, max_model_len=4096)
    assert spec.env["ROCR_VISIBLE_DEVICES"] == "2,3"
    assert "--tensor-parallel-size" in spec.args and spec.args[spec.args.index("--tensor-parallel-size") + 1] == "2"


@pytest.mark.parametrize("need, partition, expected", [(12.0, 24.0, 0.5), (23.9, 24.0, 0.95), (0.1, 192.0, 0.05), (19.453, 24.0, 0.82)])
def test_gpu_memory_utilization(need, partition, expected):
    assert gpu_memory_utilization(need, partition) == expected


def test_a_model_larger_than_its_partition_is_refused():
    with pytest.raises(IsolationError, match="needs 30.0 GiB but the partition has 24.0 GiB"):
        workload_spec(bindings=[binding(0)], model_id="m", memory_required_gb=30, max_model_len=8192)


def test_partitions_on_two_nodes_are_refused():
    other = DeviceBinding(node="n2", gpu_index=0, partition_index=0, logical_index=0, render_node="renderD128", memory_gb=24)
    with pytest.raises(IsolationError, match="one node"):
        workload_spec(bindings=[binding(0), other], model_id="m", memory_required_gb=1, max_model_len=1)


def test_unknown_render_node_is_said_not_invented():
    spec = workload_spec(bindings=[binding(4, render=None)], model_id="m", memory_required_gb=1, max_model_len=10)
    assert spec.devices == ("/dev/kfd",)
    assert any("render node unknown" in note for note in spec.notes)


def test_serving_command_splits_the_template_and_never_lets_the_model_add_words():
    from serving.isolation import serving_command

    spec = workload_spec(bindings=[binding(3)], model_id="org/m x;rm", memory_required_gb=1, max_model_len=128)
    argv = serving_command("vllm serve {model}", spec, model_id="org/m x;rm", host="127.0.0.1", port="{port}")
    assert argv[:3] == ("vllm", "serve", "org/m x;rm")
    assert argv.count("org/m x;rm") == 1 and argv[-4:] == ("--host", "127.0.0.1", "--port", "{port}")
    assert "--tensor-parallel-size" in argv and "--max-model-len" in argv


def test_serving_command_without_a_model_placeholder_passes_it_as_an_option():
    from serving.isolation import serving_command

    spec = workload_spec(bindings=[binding(0)], model_id="m", memory_required_gb=1, max_model_len=64)
    argv = serving_command("'/opt/v env/bin/python' -m vllm.entrypoints.openai.api_server", spec, model_id="m",
                           host="h", port="1")
    assert argv[:5] == ("/opt/v env/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m")
    with pytest.raises(IsolationError):
        serving_command("'unclosed", spec, model_id="m", host="h", port="1")
