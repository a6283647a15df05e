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
    Validation,
    get_spec,
    layout,
    reported_caps,
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
    # Non-SPX MI325X pairs are copied from MI300X, not documented for MI325X: estimated.
    ("MI325X", "DPX", "NPS1"): (2, 4, 152, 128.0, True),
    ("MI325X", "QPX", "NPS1"): (4, 2, 76, 64.0, True),
    ("MI325X", "QPX", "NPS4"): (4, 2, 76, 64.0, True),
    ("MI325X", "CPX", "NPS1"): (8, 1, 38, 32.0, True),
    ("MI325X", "CPX", "NPS4"): (8, 1, 38, 32.0, True),
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
    ("MI350X", "QPX", "NPS2"): (4, 2, 64, 72.0, True),
    ("MI350X", "CPX", "NPS1"): (8, 1, 32, 36.0, True),
    ("MI350X", "CPX", "NPS2"): (8, 1, 32, 36.0, True),
    ("MI355X", "SPX", "NPS1"): (1, 8, 256, 288.0, True),
    ("MI355X", "DPX", "NPS1"): (2, 4, 128, 144.0, True),
    ("MI355X", "DPX", "NPS2"): (2, 4, 128, 144.0, True),
    ("MI355X", "QPX", "NPS1"): (4, 2, 64, 72.0, True),
    ("MI355X", "QPX", "NPS2"): (4, 2, 64, 72.0, True),
    ("MI355X", "CPX", "NPS1"): (8, 1, 32, 36.0, True),
    ("MI355X", "CPX", "NPS2"): (8, 1, 32, 36.0, True),
    # MI350P (PCIe): 4 XCDs, 128 CUs, 144 GiB, one IOD so NPS1 only (ROCm MI350 microarchitecture page).
    ("MI350P", "SPX", "NPS1"): (1, 4, 128, 144.0, True),
    ("MI350P", "DPX", "NPS1"): (2, 2, 64, 72.0, True),
    ("MI350P", "CPX", "NPS1"): (4, 1, 32, 36.0, True),
}

ALL_TRIPLES = [
    (model, compute.value, memory.value)
    for model in SPECS
    for compute, memory in itertools.product(ComputeMode, MemoryMode)
]
INVALID = [t for t in ALL_TRIPLES if t not in EXPECTED]


def test_the_seven_gpu_models_are_known():
    assert set(SPECS) == {"MI300X", "MI325X", "MI300A", "MI308X", "MI350X", "MI355X", "MI350P"}


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
    assert spec.layout("DPX", "NPS2", caps=caps).validation == Validation.CONDITIONAL


def test_caps_can_also_narrow_the_valid_pairs():
    # Real MI300X 6.4 profile table: DPX only with NPS1, QPX/CPX with NPS1 or NPS4.
    spec = get_spec("MI300X")
    caps = {"SPX": ["NPS1"], "DPX": ["NPS1"], "QPX": ["NPS1"], "CPX": ["NPS1"]}
    with pytest.raises(InvalidPartitionMode):
        spec.layout("CPX", "NPS4", caps=caps)


@pytest.mark.parametrize("model", ["MI350X", "MI355X"])
@pytest.mark.parametrize("compute", ["QPX", "CPX"])
def test_gfx950_allows_qpx_and_cpx_under_nps2_as_driver_allowed(model, compute):
    # amd-gfx "drm/amdgpu: Update supported modes for GC v9.5.0" (July 2025): the driver's
    # compatible NPS modes for QPX and CPX gain NPS2 on GC 9.5.0; AMD lists no validation.
    result = layout(model, compute, "NPS2")
    assert result.validation == Validation.DRIVER_ALLOWED
    assert "GC v9.5.0" in result.note
    assert get_spec(model).validation(compute, "NPS2") == Validation.DRIVER_ALLOWED


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


# --- validation status -------------------------------------------------------------------------

@pytest.mark.parametrize("model, compute, memory, status", [
    ("MI300X", "CPX", "NPS4", Validation.VALIDATED),
    ("MI325X", "SPX", "NPS1", Validation.VALIDATED),
    ("MI325X", "DPX", "NPS1", Validation.ESTIMATED),  # copied from MI300X
    ("MI325X", "CPX", "NPS4", Validation.ESTIMATED),
    ("MI300A", "SPX", "NPS1", Validation.VALIDATED),
    ("MI300A", "TPX", "NPS1", Validation.DRIVER_ALLOWED),  # driver-allowed, no longer AMD-validated
    ("MI300A", "CPX", "NPS1", Validation.VALIDATED),
    ("MI308X", "SPX", "NPS1", Validation.ESTIMATED),
    ("MI308X", "CPX", "NPS4", Validation.ESTIMATED),
    ("MI355X", "DPX", "NPS2", Validation.VALIDATED),
    ("MI350P", "SPX", "NPS1", Validation.VALIDATED),
    ("MI350P", "DPX", "NPS1", Validation.DRIVER_ALLOWED),
])
def test_every_pair_has_a_validation_status(model, compute, memory, status):
    result = layout(model, compute, memory)
    assert result.validation == status
    if status == Validation.ESTIMATED:
        assert result.estimated


def test_every_valid_pair_of_every_model_has_a_known_status():
    for spec in SPECS.values():
        for compute, memory in spec.valid_pairs:
            assert spec.validation(compute, memory) in (
                Validation.VALIDATED, Validation.DRIVER_ALLOWED, Validation.ESTIMATED)
        for compute, memory in spec.conditional_pairs:
            assert spec.validation(compute, memory) == Validation.CONDITIONAL


def test_validation_labels_say_driver_allowed_distinctly():
    assert Validation.DRIVER_ALLOWED.label == "driver-allowed, not AMD-validated"
    assert len({v.label for v in Validation}) == len(Validation)


def test_mi355x_cpx_under_nps2_is_a_valid_layout():
    result = layout("MI355X", "CPX", "NPS2")
    assert (result.count, result.xcds, result.memory_gb) == (8, 1, 36.0)


def test_mi350p_runs_no_nps2_and_no_qpx():
    spec = get_spec("MI350P")
    assert spec.memory_modes == (MemoryMode.NPS1,) and ComputeMode.QPX not in spec.compute_modes
    with pytest.raises(InvalidPartitionMode):
        spec.layout("DPX", "NPS2")


# --- pairs the hardware reports --------------------------------------------------------------

def test_a_pair_the_hardware_reports_is_accepted_though_the_table_lacks_it():
    spec = get_spec("MI300X")
    caps = {"SPX": ["NPS1"], "QPX": ["NPS1", "NPS2", "NPS4"], "CPX": ["NPS1", "NPS4"]}
    result = spec.layout("QPX", "NPS2", caps=caps)
    assert (result.count, result.xcds, result.memory_gb) == (4, 2, 48.0)
    assert result.validation == Validation.REPORTED
    assert "reported by hardware" in result.note
    assert (ComputeMode.QPX, MemoryMode.NPS2) in spec.allowed_pairs(caps)
    # without caps the table decides
    with pytest.raises(InvalidPartitionMode):
        spec.layout("QPX", "NPS2")


def test_a_reported_compute_mode_must_divide_the_xcds():
    spec = get_spec("MI300X")  # 8 XCDs: TPX (3 partitions) cannot exist whatever is reported
    with pytest.raises(InvalidPartitionMode):
        spec.layout("TPX", "NPS1", caps={"TPX": ["NPS1"]})


@pytest.mark.parametrize("profiles, expected", [
    ([], None),
    ([{"accelerator_type": "CPX", "memory_caps": []}], None),  # no caps reported: use the table
    ([{"accelerator_type": "CPX", "memory_caps": ["N/A"]}], None),
    ([{"accelerator_type": "SPX", "memory_caps": ["NPS1"]}, {"accelerator_type": "CPX*", "memory_caps": []}],
     {"SPX": ("NPS1",)}),
    ([{"accelerator_type": "CPX", "memory_caps": ["NPS1", " NPS4"]}], {"CPX": ("NPS1", "NPS4")}),
])
def test_reported_caps_has_one_meaning(profiles, expected):
    assert reported_caps(profiles) == expected


def test_reported_caps_reads_backend_profiles_too():
    from partitions.backends.types import AcceleratorProfile

    profiles = (AcceleratorProfile(profile_index=3, accelerator_type="CPX", memory_caps=("NPS1", "NPS4"),
                                   num_partitions=8, active=True),)
    assert reported_caps(profiles) == {"CPX": ("NPS1", "NPS4")}


# --- what the driver picks after a reload ------------------------------------------------------

@pytest.mark.parametrize("model, memory, compute", [
    ("MI300X", "NPS1", "SPX"),
    ("MI300X", "NPS4", "CPX"),  # aqua_vanjaram __aqua_vanjaram_get_auto_mode: NPS4 -> CPX on a dGPU
    ("MI325X", "NPS4", "CPX"),
    ("MI308X", "NPS4", "CPX"),
    ("MI355X", "NPS2", "DPX"),
    ("MI300A", "NPS1", "SPX"),
])
def test_compute_mode_after_a_driver_reload(model, memory, compute):
    assert get_spec(model).compute_after_reload(memory) == compute


def test_the_catalog_sizes_every_model_but_mi350p_until_its_migration():
    from partitions.geometry import GPU_MODELS

    assert GPU_MODELS == ("MI300X", "MI325X", "MI300A", "MI308X", "MI350X", "MI355X")
    assert not get_spec("MI350P").in_catalog
