"""Loader and validator for the model catalog data file (``models/data/catalog.json``).

Pure Python, no Django: ``load_catalog_data`` reads and validates the whole file and returns
frozen dataclasses, or raises ``CatalogDataError`` naming the file, the entry (index and
hf_id) and the field at fault. The Django ``load_catalog`` command calls it and writes the
database in one transaction, so a bad file changes nothing.

File schema (``schema_version`` 1), units as in ``models.sizing`` (billions of parameters,
tokens, elements, GiB)::

    {
      "schema_version": 1,
      "description": str,                      # optional
      "units": {field: str, ...},              # human-readable units, for the reader
      "precisions": [{"code": str, "label": str, "bytes_per_weight": number > 0,
                      "description": str (optional)}, ...],
      "dropped": [{"upstream_id": str, "reason": str}, ...],   # optional
      "models": [MODEL, ...]
    }

    MODEL = {
      "hf_id": "org/name",              # real Hugging Face repo id, unique (case-insensitive)
      "upstream_id": str | null,        # the prototype's id, for traceability
      "name": str, "vendor": str, "family": str,
      "architecture": "dense" | "moe",
      "modality": str,                  # "text", "vision-text"
      "total_params_b": number > 0,     # all weights, every expert
      "active_params_b": number > 0 | null,   # null for dense, required for moe, <= total
      "context_length": int > 0,        # config max_position_embeddings (tokens)
      "num_layers": int > 0,
      "num_attention_heads": int > 0,
      "num_kv_heads": int > 0,
      "head_dim": int > 0,
      "attention": "gqa" | "mla",
      "kv_lora_rank": int > 0,          # mla only (required there, absent or null for gqa)
      "qk_rope_head_dim": int > 0,      # mla only
      "native_precision": code,         # optional: the precision the checkpoint ships in
      "config_confidence": "verified" | "recalled",
      "notes": str,                     # may be empty
      "precisions": [code, ...]         # non-empty, unique, each in the top-level list
    }
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from models.sizing import ModelShape, SizingError

SCHEMA_VERSION: Final = 1
DEFAULT_CATALOG_PATH: Final = Path(__file__).resolve().parent / "data" / "catalog.json"

ARCHITECTURES: Final = ("dense", "moe")
ATTENTIONS: Final = ("gqa", "mla")
CONFIDENCES: Final = ("verified", "recalled")
_HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class CatalogDataError(ValueError):
    """A malformed catalog data file. The message names the file, the entry and the field."""

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        section: str | None = None,
        index: int | None = None,
        hf_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.problem = problem
        self.section = section
        self.index = index
        self.hf_id = hf_id
        self.field = field
        where = path
        if section is not None:
            where += f": {section}" + (f"[{index}]" if index is not None else "")
            if section == "models" and index is not None:
                where += f" (hf_id {hf_id!r})" if hf_id else " (hf_id missing)"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class PrecisionInfo:
    """A weight precision the catalog offers."""

    code: str
    """Short code: fp16, fp8, int8, int4."""
    label: str
    """Display label, e.g. "FP16/BF16"."""
    bytes_per_weight: float
    """Bytes per parameter."""
    description: str = ""
    """One line for the UI (optional in the file)."""


@dataclass(frozen=True)
class DroppedModel:
    """An upstream catalog entry deliberately left out, and why."""

    upstream_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One catalog model (see the module docstring for units)."""

    hf_id: str
    upstream_id: str | None
    name: str
    vendor: str
    family: str
    architecture: str
    modality: str
    total_params_b: float
    active_params_b: float | None
    context_length: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    attention: str
    kv_lora_rank: int | None
    qk_rope_head_dim: int | None
    native_precision: str | None
    config_confidence: str
    notes: str
    precisions: tuple[str, ...]

    @property
    def shape(self) -> ModelShape:
        """The sizing view of this model (``models.sizing.ModelShape``)."""
        return ModelShape.of(self)


@dataclass(frozen=True)
class CatalogData:
    """The validated contents of a catalog data file."""

    path: str
    schema_version: int
    units: Mapping[str, str]
    precisions: tuple[PrecisionInfo, ...]
    models: tuple[ModelEntry, ...]
    dropped: tuple[DroppedModel, ...]

    def precision(self, code: str) -> PrecisionInfo:
        """The precision with ``code``; KeyError if the catalog has none."""
        for info in self.precisions:
            if info.code == code:
                return info
        raise KeyError(code)

    def model(self, hf_id: str) -> ModelEntry:
        """The model with ``hf_id`` (case-insensitive); KeyError if absent."""
        wanted = hf_id.lower()
        for entry in self.models:
            if entry.hf_id.lower() == wanted:
                return entry
        raise KeyError(hf_id)


# ---------------------------------------------------------------------------------------
# Field checks. Each returns the typed value or raises _FieldProblem(field, problem).


class _FieldProblem(Exception):
    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(problem)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str(obj: Mapping[str, Any], key: str, *, empty_ok: bool = False) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise _FieldProblem(key, f"must be a string, got {type(value).__name__} {value!r}")
    if not empty_ok and not value.strip():
        raise _FieldProblem(key, "must not be empty")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key)


def _choice(obj: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = _str(obj, key)
    if value not in choices:
        raise _FieldProblem(key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _positive_number(obj: Mapping[str, Any], key: str) -> float:
    value = obj[key]
    if not _is_number(value):
        raise _FieldProblem(key, f"must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise _FieldProblem(key, f"must be a positive number, got {value!r}")
    return number


def _opt_positive_number(obj: Mapping[str, Any], key: str) -> float | None:
    return None if obj.get(key) is None else _positive_number(obj, key)


def _positive_int(obj: Mapping[str, Any], key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldProblem(key, f"must be a whole number, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise _FieldProblem(key, f"must be positive, got {value!r}")
    return int(value)


def _opt_positive_int(obj: Mapping[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else _positive_int(obj, key)


_MODEL_REQUIRED: Final = (
    "hf_id",
    "upstream_id",
    "name",
    "vendor",
    "family",
    "architecture",
    "modality",
    "total_params_b",
    "active_params_b",
    "context_length",
    "num_layers",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "attention",
    "config_confidence",
    "notes",
    "precisions",
)
_MODEL_OPTIONAL: Final = ("kv_lora_rank", "qk_rope_head_dim", "native_precision")
_TOP_REQUIRED: Final = ("schema_version", "units", "precisions", "models")
_TOP_OPTIONAL: Final = ("description", "dropped")


def _check_keys(obj: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    for key in required:
        if key not in obj:
            raise _FieldProblem(key, "missing")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise _FieldProblem(unknown[0], "unknown field (typo?)")


def _parse_model(obj: Mapping[str, Any], codes: Mapping[str, PrecisionInfo]) -> ModelEntry:
    _check_keys(obj, _MODEL_REQUIRED, _MODEL_OPTIONAL)
    hf_id = _str(obj, "hf_id")
    if not _HF_ID.fullmatch(hf_id):
        raise _FieldProblem("hf_id", f"must look like 'org/name', got {hf_id!r}")
    architecture = _choice(obj, "architecture", ARCHITECTURES)
    total = _positive_number(obj, "total_params_b")
    active = _opt_positive_number(obj, "active_params_b")
    if architecture == "dense" and active is not None:
        raise _FieldProblem("active_params_b", "must be null for a dense model")
    if architecture == "moe" and active is None:
        raise _FieldProblem("active_params_b", "is required for a moe model")
    if active is not None and active > total:
        raise _FieldProblem(
            "active_params_b",
            f"({active:g}B) exceeds total_params_b ({total:g}B); the total counts every expert",
        )
    attention = _choice(obj, "attention", ATTENTIONS)
    heads = _positive_int(obj, "num_attention_heads")
    kv_heads = _positive_int(obj, "num_kv_heads")
    kv_lora_rank = _opt_positive_int(obj, "kv_lora_rank")
    qk_rope_head_dim = _opt_positive_int(obj, "qk_rope_head_dim")
    if attention == "mla":
        for key, value in (("kv_lora_rank", kv_lora_rank), ("qk_rope_head_dim", qk_rope_head_dim)):
            if value is None:
                raise _FieldProblem(key, "is required for mla attention")
    else:
        for key, value in (("kv_lora_rank", kv_lora_rank), ("qk_rope_head_dim", qk_rope_head_dim)):
            if value is not None:
                raise _FieldProblem(key, "applies to mla attention only; omit it or use null")
        if heads % kv_heads:
            raise _FieldProblem(
                "num_kv_heads",
                f"{kv_heads} does not divide num_attention_heads {heads} (grouped-query attention)",
            )
    native = _opt_str(obj, "native_precision")
    if native is not None and native not in codes:
        raise _FieldProblem("native_precision", f"unknown precision code {native!r}")
    raw_precisions = obj["precisions"]
    if not isinstance(raw_precisions, list) or not raw_precisions:
        raise _FieldProblem("precisions", "must be a non-empty list of precision codes")
    precisions: list[str] = []
    for code in raw_precisions:
        if not isinstance(code, str) or code not in codes:
            raise _FieldProblem(
                "precisions", f"unknown precision code {code!r}; known: {', '.join(codes)}"
            )
        if code in precisions:
            raise _FieldProblem("precisions", f"lists {code!r} twice")
        precisions.append(code)
    entry = ModelEntry(
        hf_id=hf_id,
        upstream_id=_opt_str(obj, "upstream_id"),
        name=_str(obj, "name"),
        vendor=_str(obj, "vendor"),
        family=_str(obj, "family"),
        architecture=architecture,
        modality=_str(obj, "modality"),
        total_params_b=total,
        active_params_b=active,
        context_length=_positive_int(obj, "context_length"),
        num_layers=_positive_int(obj, "num_layers"),
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=_positive_int(obj, "head_dim"),
        attention=attention,
        kv_lora_rank=kv_lora_rank,
        qk_rope_head_dim=qk_rope_head_dim,
        native_precision=native,
        config_confidence=_choice(obj, "config_confidence", CONFIDENCES),
        notes=_str(obj, "notes", empty_ok=True),
        precisions=tuple(precisions),
    )
    try:
        entry.shape  # noqa: B018 - the sizing model's own checks, as a last line of defence
    except SizingError as exc:
        raise _FieldProblem("attention", str(exc)) from None
    return entry


def _parse_precision(obj: Mapping[str, Any]) -> PrecisionInfo:
    _check_keys(obj, ("code", "label", "bytes_per_weight"), ("description",))
    return PrecisionInfo(
        code=_str(obj, "code"),
        label=_str(obj, "label"),
        bytes_per_weight=_positive_number(obj, "bytes_per_weight"),
        description=_str(obj, "description", empty_ok=True) if "description" in obj else "",
    )


def _parse_dropped(obj: Mapping[str, Any]) -> DroppedModel:
    _check_keys(obj, ("upstream_id", "reason"), ())
    return DroppedModel(upstream_id=_str(obj, "upstream_id"), reason=_str(obj, "reason"))


def parse_catalog_data(raw: object, path: str = "<catalog data>") -> CatalogData:
    """Validate already-decoded JSON ``raw``; ``path`` only labels error messages."""
    if not isinstance(raw, dict):
        raise CatalogDataError(path, f"top level must be a JSON object, got {type(raw).__name__}")
    top: dict[str, Any] = raw
    try:
        _check_keys(top, _TOP_REQUIRED, _TOP_OPTIONAL)
        if top["schema_version"] != SCHEMA_VERSION or isinstance(top["schema_version"], bool):
            raise _FieldProblem(
                "schema_version", f"must be {SCHEMA_VERSION}, got {top['schema_version']!r}"
            )
        units = top["units"]
        if not isinstance(units, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in units.items()
        ):
            raise _FieldProblem("units", "must be an object mapping field names to unit strings")
        if top.get("description") is not None:
            _str(top, "description")
        for key in ("precisions", "models"):
            if not isinstance(top[key], list) or not top[key]:
                raise _FieldProblem(key, "must be a non-empty list")
        if top.get("dropped") is not None and not isinstance(top["dropped"], list):
            raise _FieldProblem("dropped", "must be a list")
    except _FieldProblem as exc:
        raise CatalogDataError(path, exc.problem, field=exc.field) from None

    def items(section: str) -> list[tuple[int, Mapping[str, Any]]]:
        out: list[tuple[int, Mapping[str, Any]]] = []
        for index, item in enumerate(top.get(section) or []):
            if not isinstance(item, dict):
                raise CatalogDataError(
                    path,
                    f"must be a JSON object, got {type(item).__name__}",
                    section=section,
                    index=index,
                )
            out.append((index, item))
        return out

    precisions: dict[str, PrecisionInfo] = {}
    for index, item in items("precisions"):
        try:
            info = _parse_precision(item)
            if info.code in precisions:
                raise _FieldProblem("code", f"duplicate precision code {info.code!r}")
        except _FieldProblem as exc:
            raise CatalogDataError(
                path, exc.problem, section="precisions", index=index, field=exc.field
            ) from None
        precisions[info.code] = info

    dropped: list[DroppedModel] = []
    for index, item in items("dropped"):
        try:
            dropped.append(_parse_dropped(item))
        except _FieldProblem as exc:
            raise CatalogDataError(
                path, exc.problem, section="dropped", index=index, field=exc.field
            ) from None

    models: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for index, item in items("models"):
        hf = item.get("hf_id")
        hf_id = hf if isinstance(hf, str) and hf.strip() else None
        try:
            entry = _parse_model(item, precisions)
            first = seen.get(entry.hf_id.lower())
            if first is not None:
                raise _FieldProblem("hf_id", f"duplicate: models[{first}] has the same hf_id")
        except _FieldProblem as exc:
            raise CatalogDataError(
                path, exc.problem, section="models", index=index, hf_id=hf_id, field=exc.field
            ) from None
        seen[entry.hf_id.lower()] = index
        models.append(entry)

    return CatalogData(
        path=path,
        schema_version=SCHEMA_VERSION,
        units=MappingProxyType(dict(units)),
        precisions=tuple(precisions.values()),
        models=tuple(models),
        dropped=tuple(dropped),
    )


def load_catalog_data(path: str | Path = DEFAULT_CATALOG_PATH) -> CatalogData:
    """Read and validate the catalog data file at ``path`` (default: the shipped one).

    Raises CatalogDataError (a ValueError) naming the file, and where relevant the entry
    (index and hf_id) and the field, for an unreadable file, invalid JSON or any malformed
    entry: missing or unknown field, wrong type, non-positive number, duplicate hf_id,
    unknown precision code, active > total parameters, inconsistent attention fields.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogDataError(name, f"cannot read file: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogDataError(
            name, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return parse_catalog_data(raw, name)
