"""Tests for the catalog data file (models/data/catalog.json) and its loader/validator."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.catalog_data import (
    DEFAULT_CATALOG_PATH,
    CatalogData,
    CatalogDataError,
    load_catalog_data,
    parse_catalog_data,
)
from models.sizing import BYTES_PER_WEIGHT, GIB, estimate_memory, fit
from partitions.geometry import get_spec


@pytest.fixture(scope="module")
def catalog() -> CatalogData:
    return load_catalog_data()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))
    return data


# --- the shipped file --------------------------------------------------------------------


def test_shipped_file_loads(catalog: CatalogData) -> None:
    assert catalog.schema_version == 1
    assert catalog.path == str(DEFAULT_CATALOG_PATH)
    assert len(catalog.models) == 37
    hf_ids = [m.hf_id.lower() for m in catalog.models]
    assert len(set(hf_ids)) == 37
    upstream = [m.upstream_id for m in catalog.models]
    assert len(set(upstream)) == 37
    assert "memory" in catalog.units and "2**30" in catalog.units["memory"]


def test_precisions(catalog: CatalogData) -> None:
    assert [(p.code, p.label, p.bytes_per_weight) for p in catalog.precisions] == [
        ("fp16", "FP16/BF16", 2.0),
        ("fp8", "FP8", 1.0),
        ("int8", "INT8", 1.0),
        ("int4", "INT4", 0.5),
    ]
    for p in catalog.precisions:
        assert BYTES_PER_WEIGHT[p.code] == p.bytes_per_weight  # sizing's table agrees
        assert p.description
    for m in catalog.models:
        assert m.precisions == ("fp16", "fp8", "int8", "int4"), m.hf_id
    assert catalog.precision("int4").bytes_per_weight == 0.5
    with pytest.raises(KeyError):
        catalog.precision("fp4")


def test_nonexistent_model_is_dropped_with_reason(catalog: CatalogData) -> None:
    assert [d.upstream_id for d in catalog.dropped] == ["unsloth/Llama-3.2-30B-Vision"]
    assert "11B and 90B" in catalog.dropped[0].reason
    ids = {m.hf_id for m in catalog.models} | {m.upstream_id for m in catalog.models}
    assert "unsloth/Llama-3.2-30B-Vision" not in ids


def test_upstream_fake_ids_replaced_by_real_hf_ids(catalog: CatalogData) -> None:
    real = {m.hf_id for m in catalog.models}
    for fake, good in [
        ("deepseek-ai/Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
        ("google/gemma-3-1B", "google/gemma-3-1b-it"),
        ("meta-llama/Llama-3.2-11B-Instruct", "meta-llama/Llama-3.2-11B-Vision-Instruct"),
        ("meta-llama/Llama-4-Scout-17B", "meta-llama/Llama-4-Scout-17B-16E-Instruct"),
        ("mistralai/Mistral-Large", "mistralai/Mistral-Large-Instruct-2411"),
        ("Qwen/Qwen3-8B-Instruct", "Qwen/Qwen3-8B"),
        ("Qwen/Qwen3-30B-Instruct", "Qwen/Qwen3-30B-A3B"),
        ("CohereForAI/aya-expanse-8B", "CohereForAI/aya-expanse-8b"),
    ]:
        assert fake not in real
        assert good in real
        assert [m.upstream_id for m in catalog.models if m.hf_id == good] == [fake]


@pytest.mark.parametrize(
    "hf_id",
    [
        "deepseek-ai/DeepSeek-V3",
        "deepseek-ai/DeepSeek-V3-0324",
        "deepseek-ai/DeepSeek-R1-0528",
        "deepseek-ai/DeepSeek-R1-Zero",
    ],
)
def test_deepseek_671b_moe_mla(catalog: CatalogData, hf_id: str) -> None:
    m = catalog.model(hf_id)
    assert (m.architecture, m.total_params_b, m.active_params_b) == ("moe", 671.0, 37.0)
    assert (m.attention, m.kv_lora_rank, m.qk_rope_head_dim, m.num_layers) == ("mla", 512, 64, 61)
    assert m.shape.kv_elements_per_token_per_layer == 576
    assert m.native_precision == "fp8"


@pytest.mark.parametrize(
    ("hf_id", "total", "active"),
    [
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", 109.0, 17.0),
        ("Qwen/Qwen3-235B-A22B", 235.0, 22.0),
        ("Qwen/Qwen3-30B-A3B", 30.5, 3.3),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7, 12.9),
        ("mistralai/Mistral-Large-Instruct-2411", 123.0, None),
        ("meta-llama/Llama-3.3-70B-Instruct", 70.6, None),
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03, None),
    ],
)
def test_parameter_counts(catalog: CatalogData, hf_id: str, total: float, active: float | None) -> None:
    m = catalog.model(hf_id)
    assert (m.total_params_b, m.active_params_b) == (total, active)
    assert m.architecture == ("moe" if active else "dense")


def test_architecture_consistency(catalog: CatalogData) -> None:
    for m in catalog.models:
        if m.architecture == "dense":
            assert m.active_params_b is None, m.hf_id
        else:
            assert m.active_params_b is not None and m.active_params_b < m.total_params_b
        if m.attention == "gqa":
            assert m.kv_lora_rank is None and m.qk_rope_head_dim is None
            assert m.num_attention_heads % m.num_kv_heads == 0
        assert m.config_confidence in ("verified", "recalled")
    recalled = {m.hf_id for m in catalog.models if m.config_confidence == "recalled"}
    assert recalled == {
        "deepseek-ai/DeepSeek-R1-Zero",
        "deepseek-ai/DeepSeek-V3-0324",
        "OdiaGenAI-LLM/qwen_1.5_odia_7b",
    }


# KV-cache elements per token per layer from the reference (tests/fixtures/model-catalog.json,
# reference.config.kv_cache_elements_per_token_per_layer), copied so this test stands alone.
KV_ELEMENTS = {
    "CohereForAI/aya-expanse-8b": 2048, "CohereForAI/aya-expanse-32b": 2048,
    "deepseek-ai/DeepSeek-R1-0528": 576, "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": 2048,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": 2048, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 512,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": 1024, "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": 2048,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": 2048, "deepseek-ai/DeepSeek-R1-Zero": 576,
    "deepseek-ai/DeepSeek-V3": 576, "deepseek-ai/DeepSeek-V3-0324": 576,
    "google/gemma-3-1b-it": 512, "google/gemma-3-4b-it": 2048, "google/gemma-3-12b-it": 4096,
    "google/gemma-3-27b-it": 4096, "meta-llama/Llama-3.1-8B-Instruct": 2048,
    "meta-llama/Llama-3.2-1B-Instruct": 1024, "meta-llama/Llama-3.2-3B-Instruct": 2048,
    "meta-llama/Llama-3.2-11B-Vision-Instruct": 2048, "meta-llama/Llama-3.3-70B-Instruct": 2048,
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": 2048,
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": 2048,
    "mistralai/Mistral-Large-Instruct-2411": 2048, "mistralai/Mixtral-8x7B-Instruct-v0.1": 2048,
    "OdiaGenAI-LLM/qwen_1.5_odia_7b": 8192, "Qwen/Qwen2.5-0.5B-Instruct": 256,
    "Qwen/Qwen2.5-1.5B-Instruct": 512, "Qwen/Qwen2.5-3B-Instruct": 512, "Qwen/Qwen3-4B": 2048,
    "Qwen/Qwen3-8B": 2048, "Qwen/Qwen3-14B": 2048, "Qwen/Qwen3-30B-A3B": 1024,
    "Qwen/Qwen3-32B": 2048, "Qwen/Qwen3-235B-A22B": 1024,
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": 512, "unsloth/Llama-3.2-11B-Vision": 2048,
}


def test_kv_elements_match_reference(catalog: CatalogData) -> None:
    assert {m.hf_id for m in catalog.models} == set(KV_ELEMENTS)
    for m in catalog.models:
        assert m.shape.kv_elements_per_token_per_layer == KV_ELEMENTS[m.hf_id], m.hf_id
        if m.attention == "gqa":
            assert 2 * m.num_kv_heads * m.head_dim == KV_ELEMENTS[m.hf_id], m.hf_id
        else:
            # MLA: 2 x 128 x 192 = 49152 would overstate the KV cache ~85x.
            assert 2 * m.num_kv_heads * m.head_dim != KV_ELEMENTS[m.hf_id]


def test_cross_check_against_reference_file(catalog: CatalogData, fixtures_dir: Path) -> None:
    ref = json.loads((fixtures_dir / "model-catalog.json").read_text(encoding="utf-8"))["models"]
    by_upstream = {m["model_id"]: m["reference"] for m in ref}
    assert len(by_upstream) == 38
    for m in catalog.models:
        r = by_upstream[m.upstream_id]  # type: ignore[index]
        c = r["config"]
        assert m.hf_id == r["hf_repo_id"]
        assert (m.architecture, m.modality) == (r["architecture"], r["modality"])
        assert (m.total_params_b, m.active_params_b) == (r["total_params_b"], r["active_params_b"])
        assert m.config_confidence == r["config_confidence"]
        assert m.context_length == c["max_position_embeddings"]
        assert m.num_layers == c["num_hidden_layers"]
        assert m.num_attention_heads == c["num_attention_heads"]
        assert (m.num_kv_heads, m.head_dim) == (c["num_key_value_heads"], c["head_dim"])
        assert m.shape.kv_elements_per_token_per_layer == c["kv_cache_elements_per_token_per_layer"]
        assert m.num_layers * m.shape.kv_elements_per_token_per_layer * 2 == c["kv_cache_bytes_per_token_fp16"]
    missing = set(by_upstream) - {m.upstream_id for m in catalog.models}
    assert missing == {"unsloth/Llama-3.2-30B-Vision"}


def test_no_671b_model_sized_under_600_gib_at_fp8(catalog: CatalogData) -> None:
    big = [m for m in catalog.models if m.total_params_b >= 600]
    assert len(big) == 4
    for m in big:
        est = estimate_memory(m.shape, catalog.precision("fp8").bytes_per_weight)
        assert est.weights_gb == pytest.approx(671e9 / GIB)  # 624.9 GiB
        assert est.total_gb > 600
        assert fit(est, m.shape, get_spec("MI300X")).gpus_needed > 1


def test_every_model_sizes_and_fits_somewhere(catalog: CatalogData) -> None:
    # The default profile (8192 tokens, 1 sequence) works for every model, precision and GPU.
    for m in catalog.models:
        for p in catalog.precisions:
            est = estimate_memory(m.shape, p.bytes_per_weight)
            # Never smaller than the weights: the prototype sized Mixtral below its weights.
            assert est.total_gb > m.total_params_b * 1e9 * p.bytes_per_weight / GIB
            for gpu in ("MI300X", "MI325X", "MI300A", "MI355X"):
                result = fit(est, m.shape, get_spec(gpu))
                assert result.gpus_needed >= 1


def test_small_models_fit_a_cpx_partition(catalog: CatalogData) -> None:
    mi300x = get_spec("MI300X")
    for hf_id in ("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "google/gemma-3-4b-it"):
        m = catalog.model(hf_id)
        assert fit(estimate_memory(m.shape, 2.0), m.shape, mi300x).smallest_partition == "CPX"


def test_model_lookup_is_case_insensitive(catalog: CatalogData) -> None:
    assert catalog.model("DEEPSEEK-AI/deepseek-v3").hf_id == "deepseek-ai/DeepSeek-V3"
    with pytest.raises(KeyError):
        catalog.model("unsloth/Llama-3.2-30B-Vision")


def test_notes_explain_corrections(catalog: CatalogData) -> None:
    assert "37B active" in catalog.model("deepseek-ai/DeepSeek-V3").notes
    assert "123B" in catalog.model("mistralai/Mistral-Large-Instruct-2411").notes
    assert "Sliding-window" in catalog.model("google/gemma-3-27b-it").notes
    assert "Chunked attention" in catalog.model("meta-llama/Llama-4-Scout-17B-16E-Instruct").notes


# --- validator errors --------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _model(index: int, change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        change(data["models"][index])

    return mutate


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda entry: entry.__setitem__(key, value)


def _del(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda entry: entry.pop(key)


# (mutation, field named, words in the problem); every case targets models[16]
# (meta-llama/Llama-3.1-8B-Instruct, dense GQA) or models[10] (deepseek-ai/DeepSeek-V3, MoE MLA).
LLAMA, DEEPSEEK = 16, 10
MODEL_CASES = [
    (LLAMA, _del("num_layers"), "num_layers", "missing"),
    (LLAMA, _set("num_layers", "32"), "num_layers", "must be a whole number"),
    (LLAMA, _set("num_layers", 32.0), "num_layers", "must be a whole number"),
    (LLAMA, _set("num_layers", True), "num_layers", "must be a whole number"),
    (LLAMA, _set("total_params_b", -8.03), "total_params_b", "must be a positive number"),
    (LLAMA, _set("total_params_b", "8B"), "total_params_b", "must be a number"),
    (LLAMA, _set("context_length", 0), "context_length", "must be positive"),
    (LLAMA, _set("head_dim", -128), "head_dim", "must be positive"),
    (LLAMA, _set("name", ""), "name", "must not be empty"),
    (LLAMA, _set("vendor", 7), "vendor", "must be a string"),
    (LLAMA, _set("precisions", ["fp16", "fp4"]), "precisions", "unknown precision code 'fp4'"),
    (LLAMA, _set("precisions", []), "precisions", "non-empty list"),
    (LLAMA, _set("precisions", ["fp16", "fp16"]), "precisions", "lists 'fp16' twice"),
    (LLAMA, _set("native_precision", "fp32"), "native_precision", "unknown precision code"),
    (LLAMA, _set("active_params_b", 3.0), "active_params_b", "must be null for a dense model"),
    (LLAMA, _set("architecture", "sparse"), "architecture", "must be one of dense, moe"),
    (LLAMA, _set("attention", "mha"), "attention", "must be one of gqa, mla"),
    (LLAMA, _set("kv_lora_rank", 512), "kv_lora_rank", "applies to mla attention only"),
    (LLAMA, _set("num_kv_heads", 5), "num_kv_heads", "does not divide num_attention_heads"),
    (LLAMA, _set("config_confidence", "guessed"), "config_confidence", "must be one of"),
    (LLAMA, _set("hf_id", "llama-3.1-8b"), "hf_id", "must look like 'org/name'"),
    (LLAMA, _set("num_layer", 32), "num_layer", "unknown field"),
    (DEEPSEEK, _set("active_params_b", 700.0), "active_params_b", "exceeds total_params_b"),
    (DEEPSEEK, _set("active_params_b", None), "active_params_b", "is required for a moe model"),
    (DEEPSEEK, _del("kv_lora_rank"), "kv_lora_rank", "is required for mla attention"),
    (DEEPSEEK, _set("qk_rope_head_dim", 0), "qk_rope_head_dim", "must be positive"),
]


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad-catalog.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(("index", "change", "field", "problem"), MODEL_CASES)
def test_malformed_model_entry_is_named(
    tmp_path: Path,
    raw: dict[str, Any],
    index: int,
    change: Callable[[dict[str, Any]], None],
    field: str,
    problem: str,
) -> None:
    data = copy.deepcopy(raw)
    hf_id = data["models"][index]["hf_id"]
    change(data["models"][index])
    path = _write(tmp_path, data)
    with pytest.raises(CatalogDataError) as info:
        load_catalog_data(path)
    err = info.value
    assert (err.path, err.section, err.index, err.field) == (str(path), "models", index, field)
    message = str(err)
    assert str(path) in message
    assert f"models[{index}]" in message
    if field != "hf_id":
        assert err.hf_id == hf_id
        assert repr(hf_id) in message
    assert f"field {field!r}" in message
    assert problem in message


def test_duplicate_hf_id_names_both_entries(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["models"][20]["hf_id"] = data["models"][16]["hf_id"].upper()  # case-insensitive
    path = _write(tmp_path, data)
    with pytest.raises(CatalogDataError) as info:
        load_catalog_data(path)
    assert (info.value.index, info.value.field) == (20, "hf_id")
    assert "duplicate: models[16] has the same hf_id" in str(info.value)
    assert "META-LLAMA/LLAMA-3.1-8B-INSTRUCT" in str(info.value)


def test_missing_hf_id_is_reported_by_index(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["models"][3]["hf_id"]
    with pytest.raises(CatalogDataError, match=r"models\[3\] \(hf_id missing\): field 'hf_id': missing"):
        load_catalog_data(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("change", "section", "index", "field", "problem"),
    [
        (lambda d: d.__setitem__("schema_version", 2), None, None, "schema_version", "must be 1"),
        (lambda d: d.pop("models"), None, None, "models", "missing"),
        (lambda d: d.__setitem__("models", []), None, None, "models", "non-empty list"),
        (lambda d: d.__setitem__("units", ["GiB"]), None, None, "units", "must be an object"),
        (lambda d: d.__setitem__("extra", 1), None, None, "extra", "unknown field"),
        (lambda d: d["precisions"].append(dict(d["precisions"][0])), "precisions", 4, "code",
         "duplicate precision code 'fp16'"),
        (lambda d: d["precisions"][3].__setitem__("bytes_per_weight", 0), "precisions", 3,
         "bytes_per_weight", "must be a positive number"),
        (lambda d: d["precisions"][1].pop("label"), "precisions", 1, "label", "missing"),
        (lambda d: d["dropped"][0].pop("reason"), "dropped", 0, "reason", "missing"),
        (lambda d: d["models"].__setitem__(5, "Qwen/Qwen3-8B"), "models", 5, None,
         "must be a JSON object"),
    ],
)
def test_malformed_top_level_is_named(
    tmp_path: Path,
    raw: dict[str, Any],
    change: Mutation,
    section: str | None,
    index: int | None,
    field: str | None,
    problem: str,
) -> None:
    data = copy.deepcopy(raw)
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(CatalogDataError) as info:
        load_catalog_data(path)
    err = info.value
    assert (err.section, err.index, err.field) == (section, index, field)
    assert str(err).startswith(str(path))
    assert problem in str(err)


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"schema_version": 1,', encoding="utf-8")
    with pytest.raises(CatalogDataError, match=r"broken\.json: invalid JSON at line 1"):
        load_catalog_data(bad)
    with pytest.raises(CatalogDataError, match=r"nope\.json: cannot read file"):
        load_catalog_data(tmp_path / "nope.json")
    with pytest.raises(CatalogDataError, match="top level must be a JSON object"):
        load_catalog_data(_write(tmp_path, [1, 2]))


def test_error_is_a_value_error_and_parse_accepts_decoded_json(raw: dict[str, Any]) -> None:
    assert issubclass(CatalogDataError, ValueError)
    data = parse_catalog_data(copy.deepcopy(raw), "inline")
    assert data.path == "inline" and len(data.models) == 37
    broken = copy.deepcopy(raw)
    broken["models"][0]["num_layers"] = -1
    with pytest.raises(CatalogDataError, match=r"^inline: models\[0\] \(hf_id 'CohereForAI/aya-expanse-8b'\)"):
        parse_catalog_data(broken, "inline")


def test_optional_fields_may_be_absent(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data.pop("dropped")
    data.pop("description")
    del data["models"][16]["native_precision"]
    data["models"][16]["upstream_id"] = None
    data["precisions"][0].pop("description")
    loaded = load_catalog_data(_write(tmp_path, data))
    assert loaded.dropped == ()
    assert loaded.models[16].native_precision is None
    assert loaded.models[16].upstream_id is None
    assert loaded.precisions[0].description == ""
