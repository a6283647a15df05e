"""GPU geometry: every model, every valid and invalid (compute, memory) pair. No database."""

from __future__ import annotations

import itertools

import pytest

from partitions.geometry import (
    SPECS,
    ComputeMode,
    GeometryError,
    InvalidPartitionMode,
    MemoryMode,
    UnknownGpuModel,
    get_spec,
    layout,
)

# (model, compute, memory) -> (partitions, XCDs each, CUs each, GiB each, estimated)
EXPECTED = {
    ("MI300X", "SPX", "NPS1"): (1, 8, 304, 192.0, False),
    ("MI300X", "DPX", "NPS1"): (2, 4, 152, 96.0, False),
    ("MI300X", "QPX", "NPS1"): (4, 2, 76, 48.0, False),
    ("MI300X", "QPX", "NPS4"): (4, 2, 76, 48.0, False),
    ("MI300X", "CPX", "NPS1"): (8, 1, 38, 24.0, False),
    ("MI300X", "CPX", "NPS4"): (8, 1, 38, 24.0, False),
    ("MI325X", "SPX", "NPS1"): (1, 8, 304, 256.0, False),
    ("MI325X", "DPX", "NPS1"): (2, 4, 152, 128.0, False),
    ("MI325X", "QPX", "NPS1"): (4, 2, 76, 64.0, False),
    ("MI325X", "QPX", "NPS4"): (4, 2, 76, 64.0, False),
    ("MI325X", "CPX", "NPS1"): (8, 1, 38, 32.0, False),
    ("MI325X", "CPX", "NPS4"): (8, 1, 38, 32.0, False),
    ("MI300A", "SPX", "NPS1"): (1, 6, 228, 128.0, True),
    ("MI300A", "TPX", "NPS1"): (3, 2, 76, 32.0, True),
    ("MI300A", "CPX", "NPS1"): (6, 1, 38, 16.0, True),
    ("MI308X", "SPX", "NPS1"): (1, 4, 80, 192.0, True),
    ("MI308X", "DPX", "NPS1"): (2, 2, 40, 96.0, True),
    ("MI308X", "CPX", "NPS1"): (4, 1, 20, 48.0, True),
    ("MI308X", "CPX", "NPS4"): (4, 1, 20, 48.0, True),
    ("MI350X", "SPX", "NPS1"): (1, 8, 256, 288.0, True),
    ("MI350X", "DPX", "NPS1"): (2, 4, 128, 144.0, True),
    ("MI350X", "DPX", "NPS2"): (2, 4, 128, 144.0, True),
    ("MI350X", "QPX", "NPS1"): (4, 2, 64, 72.0, True),
    ("MI350X", "CPX", "NPS1"): (8, 1, 32, 36.0, True),
    ("MI355X", "SPX", "NPS1"): (1, 8, 256, 288.0, True),
    ("MI355X", "DPX", "NPS1"): (2, 4, 128, 144.0, True),
    ("MI355X", "DPX", "NPS2"): (2, 4, 128, 144.0, True),
    ("MI355X", "QPX", "NPS1"): (4, 2, 64, 72.0, True),
    ("MI355X", "CPX", "NPS1"): (8, 1, 32, 36.0, True),
}

ALL_TRIPLES = [
    (model, compute.value, memory.value)
    for model in SPECS
    for compute, memory in itertools.product(ComputeMode, MemoryMode)
]
INVALID = [t for t in ALL_TRIPLES if t not in EXPECTED]


def test_the_six_gpu_models_are_known():
    assert set(SPECS) == {"MI300X", "MI325X", "MI300A", "MI308X", "MI350X", "MI355X"}


def test_expected_table_covers_exactly_the_valid_pairs():
    valid = {(m, c, n) for m, spec in SPECS.items() for c, n in spec.valid_pairs}
    assert valid == set(EXPECTED)


@pytest.mark.parametrize("model, compute, memory", sorted(EXPECTED))
def test_valid_pair_layout(model, compute, memory):
    count, xcds, cus, memory_gb, estimated = EXPECTED[(model, compute, memory)]
    result = layout(model, compute, memory)
    assert (result.count, result.xcds, result.cus, result.memory_gb, result.estimated) == (
        count, xcds, cus, memory_gb, estimated,
    )
    spec = get_spec(model)
    # Partitions never add up to more than the GPU has.
    assert result.count * result.xcds == spec.xcds
    assert result.count * result.cus == spec.cus
    assert result.total_memory_gb <= spec.memory_gb + 1e-9


@pytest.mark.parametrize("model, compute, memory", INVALID)
def test_invalid_pair_names_the_valid_ones(model, compute, memory):
    with pytest.raises(InvalidPartitionMode) as excinfo:
        layout(model, compute, memory)
    message = str(excinfo.value)
    assert f"{compute}+{memory}" in message
    for c, m in get_spec(model).valid_pairs:
        assert f"{c}+{m}" in message


@pytest.mark.parametrize("compute, memory", [("spx", "nps1"), ("XPX", "NPS1"), ("SPX", "NPS3"), ("", "")])
def test_unknown_mode_names_are_refused_clearly(compute, memory):
    if compute.upper() == "SPX" and memory.upper() == "NPS1":
        assert layout("MI300X", compute, memory).count == 1  # case-insensitive
        return
    with pytest.raises(InvalidPartitionMode, match="valid combinations: SPX\\+NPS1"):
        layout("MI300X", compute, memory)


@pytest.mark.parametrize("name", ["H100", "MI250X", "", "MI300"])
def test_unknown_gpu_models_name_the_known_ones(name):
    with pytest.raises(UnknownGpuModel, match="known models: MI300X"):
        get_spec(name)


@pytest.mark.parametrize("name", ["MI300X", "mi300x", " AMD Instinct MI300X ", "AMD Instinct MI355X"])
def test_market_names_resolve(name):
    assert get_spec(name).model in SPECS


def test_nps4_only_with_qpx_or_cpx_on_mi300x():
    spec = get_spec("MI300X")
    assert {c for c, m in spec.valid_pairs if m == MemoryMode.NPS4} == {ComputeMode.QPX, ComputeMode.CPX}


def test_modes_a_model_lacks_are_geometry_errors():
    with pytest.raises(GeometryError, match="no TPX mode"):
        get_spec("MI300X").partition_count("TPX")
    with pytest.raises(GeometryError, match="no QPX mode"):
        get_spec("MI308X").partition_count("QPX")


def test_conditional_pairs_need_the_hardware_caps():
    spec = get_spec("MI300X")
    with pytest.raises(InvalidPartitionMode):
        spec.layout("DPX", "NPS2")
    caps = {"SPX": ["NPS1"], "DPX*": ["NPS1", "NPS2"], "QPX": ["NPS1", "NPS4"], "CPX": ["NPS1", "NPS4"]}
    assert spec.layout("DPX", "NPS2", caps=caps).count == 2
    assert "firmware-dependent" in spec.layout("DPX", "NPS2", caps=caps).note
    # caps cannot invent pairs the model cannot run at all
    with pytest.raises(InvalidPartitionMode):
        spec.layout("SPX", "NPS4", caps={"SPX": ["NPS1", "NPS4"]})


def test_caps_can_also_narrow_the_valid_pairs():
    # Real MI300X 6.4 profile table: DPX only with NPS1, QPX/CPX with NPS1 or NPS4.
    spec = get_spec("MI300X")
    caps = {"SPX": ["NPS1"], "DPX": ["NPS1"], "QPX": ["NPS1"], "CPX": ["NPS1"]}
    with pytest.raises(InvalidPartitionMode):
        spec.layout("CPX", "NPS4", caps=caps)


def test_qpx_nps2_on_mi350_series_from_rocm_7_13():
    spec = get_spec("MI355X")
    assert (ComputeMode.QPX, MemoryMode.NPS2) not in spec.pairs_for_rocm((7, 1))
    assert (ComputeMode.QPX, MemoryMode.NPS2) in spec.pairs_for_rocm((7, 13))


def test_mi300a_is_an_apu_without_memory_switching():
    spec = get_spec("MI300A")
    assert spec.apu and not spec.memory_switchable
    assert spec.memory_modes == (MemoryMode.NPS1,)


def test_modes_by_partition_size_run_from_cpx_to_spx():
    assert get_spec("MI300X").modes_by_partition_size() == ("CPX", "QPX", "DPX", "SPX")
    assert get_spec("MI300A").modes_by_partition_size() == ("CPX", "TPX", "SPX")


@pytest.mark.parametrize("model", sorted(SPECS))
def test_default_pair_is_spx_nps1(model):
    assert get_spec(model).default_pair == (ComputeMode.SPX, MemoryMode.NPS1)
