"""State changes of the catalog: loading the data file and keeping profiles computed.

Views, the API, Django admin and ``load_catalog`` all go through these functions, so a
profile is never stale after one of its inputs changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, IntegerField, Q, Value
from django.db.models.functions import Least
from django.utils import timezone

from aimconsole import audit
from models import dependents, sizing
from models.catalog_data import load_catalog_data
from models.models import InferenceModel, ModelPrecision, ModelProfile, Precision
from partitions.geometry import GPU_MODELS, get_spec

DEFAULT_CONTEXT_TOKENS = 8192
DEFAULT_CONCURRENT_SEQUENCES = 1


def default_context_tokens(context_length: int) -> int:
    """Tokens per sequence a model's default profile is sized for: ``DEFAULT_CONTEXT_TOKENS``,
    or the model's max context when that is shorter. The serve line clamps ``--max-model-len``
    to the model's max, so a longer default would reserve KV cache no engine ever allocates."""
    return min(DEFAULT_CONTEXT_TOKENS, context_length)


def default_profiles() -> Q:
    """Filter for ModelProfile: the default profile of each (model, precision, GPU model),
    i.e. ``default_context_tokens(model.context_length)`` tokens x 1 sequence. Pages and
    reads that show "the" profile of a model filter with this, not with 8192 tokens."""
    return Q(concurrent_sequences=DEFAULT_CONCURRENT_SEQUENCES,
             context_tokens=Least(Value(DEFAULT_CONTEXT_TOKENS), F("model__context_length"), output_field=IntegerField()))


# Fields of InferenceModel copied from the data file, in the data file's names.
_MODEL_FIELDS = (
    "upstream_id", "name", "vendor", "family", "architecture", "modality", "total_params_b",
    "active_params_b", "context_length", "num_layers", "num_attention_heads", "attention",
    "num_kv_heads", "head_dim", "kv_lora_rank", "qk_rope_head_dim", "native_precision", "config_confidence", "notes",
)


def sizing_policy() -> sizing.SizingPolicy:
    """The runtime-overhead policy configured in settings (see README "Sizing")."""
    return sizing.SizingPolicy(
        overhead_fixed_gb=settings.SIZING_OVERHEAD_FIXED_GB,
        overhead_fraction=settings.SIZING_OVERHEAD_FRACTION,
    )


def model_shape(model: InferenceModel) -> sizing.ModelShape:
    return sizing.ModelShape.of(model)


def _computed_values(profile: ModelProfile, shape: sizing.ModelShape, policy: sizing.SizingPolicy) -> dict:
    try:
        estimate = sizing.estimate_memory(
            shape,
            float(profile.precision.bytes_per_weight),
            context_tokens=profile.context_tokens,
            concurrent_sequences=profile.concurrent_sequences,
            policy=policy,
        )
        result = sizing.fit(estimate, shape, get_spec(profile.gpu_model), policy)
    except sizing.SizingError as exc:
        # e.g. a context so long that no layout of up to MAX_GPUS GPUs holds it
        raise ValidationError({"context_tokens": f"cannot size this profile: {exc}"}) from exc
    return {
        "weights_gb": round(estimate.weights_gb, 3),
        "kv_cache_gb": round(estimate.kv_cache_gb, 3),
        "overhead_gb": round(estimate.overhead_gb, 3),
        "memory_required_gb": round(estimate.total_gb, 3),
        "fits": {str(mode): bool(ok) for mode, ok in result.fits.items()},
        "smallest_partition": None if result.smallest_partition is None else str(result.smallest_partition),
        "replicas_per_gpu": {str(mode): int(n) for mode, n in result.replicas_per_gpu.items()},
        "gpus_needed": int(result.gpus_needed),
        "per_gpu_gb": round(result.per_gpu_gb, 3),
    }


def compute_profile(profile: ModelProfile, *, policy: sizing.SizingPolicy | None = None, save: bool = True) -> bool:
    """Recompute ``profile``'s results in place and save them if they changed.

    Raises ValidationError (nothing saved) when the inputs cannot be sized.

    Returns whether anything was written (unchanged rows are left untouched, which keeps
    ``load_catalog`` idempotent down to ``computed_at``).
    """
    values = _computed_values(profile, model_shape(profile.model), policy or sizing_policy())
    if profile.pk and all(getattr(profile, name) == value for name, value in values.items()):
        return False
    for name, value in values.items():
        setattr(profile, name, value)
    profile.computed_at = timezone.now()
    if save:
        profile.save()
    return True


@transaction.atomic
def refresh_profiles(*, model: InferenceModel, policy: sizing.SizingPolicy | None = None) -> int:
    """Make ``model``'s profiles match its precisions and recompute every one of them.

    Ensures the default profile (``default_context_tokens`` tokens, 1 sequence) for each
    offered precision on each GPU model, drops profiles of precisions no longer offered, and
    recomputes all (custom context/concurrency profiles included). Returns the number of rows
    written.
    """
    policy = policy or sizing_policy()
    precisions = list(model.precisions.all())
    model.profiles.exclude(precision__in=precisions).delete()
    context = default_context_tokens(model.context_length)
    if context < DEFAULT_CONTEXT_TOKENS:
        # Defaults created before the default was capped at the model's max context (8192
        # tokens for a 2048-token model): dropped unless a deployment still uses one (PROTECT).
        model.profiles.filter(context_tokens=DEFAULT_CONTEXT_TOKENS, concurrent_sequences=DEFAULT_CONCURRENT_SEQUENCES,
                              deployments__isnull=True).delete()
    existing = {
        (p.precision_id, p.gpu_model, p.context_tokens, p.concurrent_sequences): p
        for p in model.profiles.select_related("precision")
    }
    written = 0
    for precision in precisions:
        for gpu_model in GPU_MODELS:
            key = (precision.pk, gpu_model, context, DEFAULT_CONCURRENT_SEQUENCES)
            if key not in existing:
                existing[key] = ModelProfile(
                    model=model,
                    precision=precision,
                    gpu_model=gpu_model,
                    context_tokens=context,
                    concurrent_sequences=DEFAULT_CONCURRENT_SEQUENCES,
                )
    for profile in existing.values():
        profile.model = model  # share the instance: one shape for all
        written += compute_profile(profile, policy=policy)
    return written


def sizing_warnings(*, profile_ids: Iterable[int]) -> list[str]:
    """After a save changed these profiles' sizing, in its transaction: what runs with them is
    re-checked (``models.dependents``: serving marks what no longer fits degraded); returns the
    warning for whoever saved ("1 running deployment no longer fits: ..."), or none."""
    line = dependents.warning(dependents.profiles_changed(profile_ids=list(profile_ids)))
    return [line] if line else []


def model_sizing_warnings(*, model: InferenceModel) -> list[str]:
    return sizing_warnings(profile_ids=model.profiles.values_list("pk", flat=True))


def custom_profile(*, base: ModelProfile, context_tokens: int | None, concurrent_sequences: int | None) -> ModelProfile:
    """The profile of ``base``'s model, precision and GPU model at this context and concurrency
    (``None``: ``base``'s), created and sized if the catalog has none yet. Raises
    ValidationError when it cannot be sized."""
    context = context_tokens or base.context_tokens
    sequences = concurrent_sequences or base.concurrent_sequences
    if (context, sequences) == (base.context_tokens, base.concurrent_sequences):
        return base
    with transaction.atomic():
        profile = ModelProfile.objects.with_related().filter(
            model_id=base.model_id, precision_id=base.precision_id, gpu_model=base.gpu_model,
            context_tokens=context, concurrent_sequences=sequences).first()
        if profile is not None:
            return profile
        profile = ModelProfile(model=base.model, precision=base.precision, gpu_model=base.gpu_model,
                               context_tokens=context, concurrent_sequences=sequences)
        compute_profile(profile)
        audit.record("catalog.profile.create", obj=profile, after=audit.snapshot(profile))
    return profile


@dataclass(frozen=True)
class LoadResult:
    created: int
    updated: int
    unchanged: int
    profiles_written: int


def load_catalog(*, path: Path | str | None = None) -> LoadResult:
    """Load the catalog data file into the database (idempotent, all or nothing).

    The file is validated first (``CatalogDataError`` names the file, entry and field); then
    precisions and models are upserted and profiles refreshed inside one transaction.
    """
    data = load_catalog_data(Path(path or settings.CATALOG_DATA_FILE))
    created = updated = unchanged = profiles_written = 0
    with transaction.atomic():
        precisions: dict[str, Precision] = {}
        for order, entry in enumerate(data.precisions):
            values = {
                "label": entry.label,
                "bytes_per_weight": entry.bytes_per_weight,
                "description": getattr(entry, "description", "") or "",
                "sort_order": order,
            }
            precision, _ = _upsert(Precision, {"code": entry.code}, values)
            precisions[entry.code] = precision
        for model_entry in data.models:
            values = {name: getattr(model_entry, name) for name in _MODEL_FIELDS}
            values = {k: ("" if v is None and k in ("upstream_id", "family", "notes", "native_precision") else v) for k, v in values.items()}
            model, state = _upsert(InferenceModel, {"hf_id": model_entry.hf_id}, values)
            created += state == "created"
            updated += state == "updated"
            unchanged += state == "unchanged"
            set_model_precisions(model=model, precisions=[precisions[code] for code in model_entry.precisions])
            profiles_written += refresh_profiles(model=model)
        if created or updated:
            audit.record("catalog.load", object_type="catalog.file", object_id=Path(data.path).name,
                         after={"created": created, "updated": updated, "unchanged": unchanged})
    return LoadResult(created, updated, unchanged, profiles_written)


def set_model_precisions(*, model: InferenceModel, precisions: Iterable[Precision]) -> None:
    """Offer ``model`` in exactly ``precisions`` (rows added/removed, others untouched)."""
    wanted = {p.pk for p in precisions}
    have = set(model.model_precisions.values_list("precision_id", flat=True))
    ModelPrecision.objects.filter(model=model, precision_id__in=have - wanted).delete()
    ModelPrecision.objects.bulk_create(
        [ModelPrecision(model=model, precision_id=pk) for pk in sorted(wanted - have)]
    )


def _upsert(model_class, lookup: dict, values: dict):
    """get-or-create by ``lookup``; save only when a value differs. Returns (row, state)."""
    row = model_class.objects.filter(**lookup).first()
    if row is None:
        row = model_class(**lookup, **values)
        row.full_clean()
        row.save()
        return row, "created"
    changed = [name for name, value in values.items() if getattr(row, name) != value]
    if not changed:
        return row, "unchanged"
    for name in changed:
        setattr(row, name, values[name])
    row.full_clean()
    row.save()
    return row, "updated"
