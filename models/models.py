"""The model catalog: inference models, precisions, and sized profiles.

Sizing arithmetic lives in ``models/sizing.py`` (pure); these rows store its inputs and, for
profiles, its results so they can be filtered and listed cheaply. Profiles are recomputed by
``models.services.refresh_profiles`` whenever an input changes.
"""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError
from django.core.validators import BaseValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from models.sizing import replica_gb_per_gpu
from partitions.geometry import GPU_MODELS, SPECS

# Upper bounds of the catalog's numbers: far above any published model (the largest context in
# the catalog is 10M tokens, the most layers 126, the largest model 1T parameters), low enough
# that sizing arithmetic and the database's integer columns cannot overflow. The API and admin
# refuse values above them, and the OpenAPI schema states them. Inputs within the bounds can
# still be unservable (too big for any layout of sizing.MAX_GPUS GPUs): the admin's forms size
# them before saving and show why.
MAX_CONTEXT_TOKENS = 2**27  # 134,217,728
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 4096
MAX_KV_LORA_RANK = 65536
MAX_PARAMS_B = 10_000.0  # 10 T parameters, ten times the largest model in the catalog
MAX_BYTES_PER_WEIGHT = 8  # fp64; serving precisions are 0.5 (int4) to 4 (fp32)
MAX_CONCURRENT_SEQUENCES = 65536

PARAMS_BOUND_MESSAGE = "Ensure this value is less than or equal to %(limit_value)s (billions of parameters)."


def validate_finite(value: float) -> None:
    """NaN passes every comparison (and SQLite stores it as NULL): refuse it, and infinity."""
    if value is not None and not math.isfinite(value):
        raise ValidationError("Enter a finite number.", code="finite")


def _at_most(limit: float) -> list[BaseValidator]:
    return [MinValueValidator(1), MaxValueValidator(limit)]


class Precision(models.Model):
    """A weight precision, e.g. ``fp16`` at 2 bytes per weight."""

    code = models.SlugField(max_length=16, unique=True)
    label = models.CharField(max_length=40)
    bytes_per_weight = models.DecimalField(
        max_digits=4, decimal_places=2, validators=[MinValueValidator(0.01), MaxValueValidator(MAX_BYTES_PER_WEIGHT)]
    )
    description = models.TextField(blank=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ("sort_order", "code")
        constraints = [
            models.CheckConstraint(condition=Q(bytes_per_weight__gt=0), name="precision_bytes_positive"),
        ]

    def __str__(self) -> str:
        return self.label or self.code


class InferenceModelQuerySet(models.QuerySet["InferenceModel"]):
    def with_precisions(self) -> InferenceModelQuerySet:
        return self.prefetch_related("precisions")


class InferenceModel(models.Model):
    """A model as served: its Hugging Face id and the architecture facts sizing needs."""

    class Architecture(models.TextChoices):
        DENSE = "dense", "Dense"
        MOE = "moe", "Mixture of experts"

    class Attention(models.TextChoices):
        GQA = "gqa", "Multi-head / grouped-query"
        MLA = "mla", "Multi-head latent (compressed KV)"

    class Confidence(models.TextChoices):
        VERIFIED = "verified", "Verified against config.json"
        RECALLED = "recalled", "Recalled, not checked"
        MANUAL = "manual", "Entered by an admin"

    hf_id = models.CharField("Hugging Face id", max_length=200, unique=True)
    upstream_id = models.CharField(
        max_length=200, blank=True, help_text="Id used by the old prototype, for traceability."
    )
    name = models.CharField(max_length=200)
    vendor = models.CharField(max_length=100)
    family = models.CharField(max_length=100, blank=True)
    architecture = models.CharField(max_length=8, choices=Architecture.choices, default=Architecture.DENSE)
    modality = models.CharField(max_length=40, default="text")
    total_params_b = models.FloatField(
        "total parameters (billions)",
        validators=[validate_finite, MinValueValidator(0.001), MaxValueValidator(MAX_PARAMS_B, PARAMS_BOUND_MESSAGE)],
    )
    active_params_b = models.FloatField(
        "active parameters (billions)",
        null=True,
        blank=True,
        validators=[validate_finite, MinValueValidator(0.001), MaxValueValidator(MAX_PARAMS_B, PARAMS_BOUND_MESSAGE)],
        help_text="Mixture-of-experts models only; all weights stay resident regardless.",
    )
    context_length = models.PositiveIntegerField(
        "maximum context (tokens)", validators=_at_most(MAX_CONTEXT_TOKENS)
    )
    num_layers = models.PositiveIntegerField(validators=_at_most(MAX_LAYERS))
    num_attention_heads = models.PositiveIntegerField(null=True, blank=True, validators=_at_most(MAX_HEADS))
    attention = models.CharField(max_length=4, choices=Attention.choices, default=Attention.GQA)
    num_kv_heads = models.PositiveIntegerField(null=True, blank=True, validators=_at_most(MAX_HEADS))
    head_dim = models.PositiveIntegerField(null=True, blank=True, validators=_at_most(MAX_HEAD_DIM))
    kv_lora_rank = models.PositiveIntegerField(null=True, blank=True, validators=_at_most(MAX_KV_LORA_RANK))
    qk_rope_head_dim = models.PositiveIntegerField(null=True, blank=True, validators=_at_most(MAX_HEAD_DIM))
    native_precision = models.CharField(
        max_length=16, blank=True, help_text="Precision the published weights are in (e.g. fp8 for DeepSeek-V3)."
    )
    config_confidence = models.CharField(max_length=10, choices=Confidence.choices, default=Confidence.MANUAL)
    notes = models.TextField(blank=True)
    precisions: models.ManyToManyField[Precision, ModelPrecision] = models.ManyToManyField(
        Precision, through="ModelPrecision", related_name="models"
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = InferenceModelQuerySet.as_manager()

    class Meta:
        ordering = ("vendor", "family", "total_params_b", "hf_id")
        verbose_name = "model"
        constraints = [
            models.CheckConstraint(condition=Q(total_params_b__gt=0), name="model_total_params_positive"),
            models.CheckConstraint(
                condition=Q(active_params_b__isnull=True)
                | (Q(active_params_b__gt=0) & Q(active_params_b__lte=models.F("total_params_b"))),
                name="model_active_params_within_total",
            ),
            models.CheckConstraint(condition=Q(context_length__gt=0), name="model_context_positive"),
            models.CheckConstraint(condition=Q(num_layers__gt=0), name="model_layers_positive"),
            models.CheckConstraint(
                condition=~Q(attention="gqa") | (Q(num_kv_heads__isnull=False) & Q(head_dim__isnull=False)),
                name="model_gqa_needs_kv_heads",
            ),
            models.CheckConstraint(
                condition=~Q(attention="mla")
                | (Q(kv_lora_rank__isnull=False) & Q(qk_rope_head_dim__isnull=False)),
                name="model_mla_needs_ranks",
            ),
        ]

    def __str__(self) -> str:
        return self.hf_id

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if (
            self.active_params_b is not None
            and self.total_params_b is not None
            and self.active_params_b > self.total_params_b
        ):
            errors["active_params_b"] = "Active parameters cannot exceed total parameters."
        if self.architecture == self.Architecture.DENSE and self.active_params_b is not None:
            errors["active_params_b"] = "Dense models have no separate active parameter count; leave it empty."
        if self.attention == self.Attention.GQA:
            for name in ("num_kv_heads", "head_dim"):
                if getattr(self, name) is None:
                    errors[name] = "Required for grouped-query attention (it sizes the KV cache)."
        if self.attention == self.Attention.MLA:
            for name in ("kv_lora_rank", "qk_rope_head_dim"):
                if getattr(self, name) is None:
                    errors[name] = "Required for multi-head latent attention (it sizes the KV cache)."
        if errors:
            raise ValidationError(errors)


class ModelPrecision(models.Model):
    """A precision a model is offered in (one profile per GPU model is kept for each)."""

    model = models.ForeignKey(InferenceModel, on_delete=models.CASCADE, related_name="model_precisions")
    precision = models.ForeignKey(Precision, on_delete=models.PROTECT, related_name="model_precisions")

    class Meta:
        ordering = ("precision__sort_order",)
        constraints = [
            models.UniqueConstraint(fields=("model", "precision"), name="model_precision_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model.hf_id} @ {self.precision.code}"


GPU_MODEL_CHOICES = [(name, name) for name in GPU_MODELS]


def validate_serving_command(value: str) -> None:
    """A serving command must split into words like a shell would (it is never run by one)."""
    import shlex

    if not value.strip():
        return
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValidationError(f"cannot split this command into words: {exc}") from None
    if any(ch in value for ch in "\x00\n\r"):
        raise ValidationError("the command must be one line without NUL characters")
    if not words:
        raise ValidationError("the command is empty")


class ModelProfileQuerySet(models.QuerySet["ModelProfile"]):
    def with_related(self) -> ModelProfileQuerySet:
        return self.select_related("model", "precision")


class ModelProfile(models.Model):
    """How much memory one model needs at one precision, context and concurrency, and how it
    fits one GPU model's partitions.

    Inputs: model, precision, gpu_model, context_tokens, concurrent_sequences.
    Everything else is computed by ``models.services.refresh_profiles`` (GiB = 2**30 bytes):
    - ``fits``: compute mode -> whether ONE partition of that mode holds the model;
    - ``smallest_partition``: the mode with the smallest partitions that still fit, or null;
    - ``replicas_per_gpu``: compute mode -> replicas one GPU holds (one per partition);
    - ``gpus_needed``: 1 if it fits a whole GPU, else the tensor-parallel degree it needs.
    """

    model = models.ForeignKey(InferenceModel, on_delete=models.CASCADE, related_name="profiles")
    precision = models.ForeignKey(Precision, on_delete=models.PROTECT, related_name="profiles")
    gpu_model = models.CharField("GPU model", max_length=16, choices=GPU_MODEL_CHOICES)
    context_tokens = models.PositiveIntegerField(default=8192, validators=_at_most(MAX_CONTEXT_TOKENS))
    concurrent_sequences = models.PositiveIntegerField(default=1, validators=_at_most(MAX_CONCURRENT_SEQUENCES))
    serving_command = models.CharField(
        max_length=500, blank=True, validators=[validate_serving_command],
        help_text="Overrides the node's serving command for this profile, split like a shell would (no shell runs it); "
                  "{model} is the model id, e.g. '/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server'. "
                  "The console appends the arguments it builds (--tensor-parallel-size, --max-model-len, ..., --port).",
    )

    weights_gb = models.FloatField(editable=False, default=0)
    kv_cache_gb = models.FloatField(editable=False, default=0)
    overhead_gb = models.FloatField(editable=False, default=0)
    memory_required_gb = models.FloatField(editable=False, default=0)
    fits = models.JSONField(editable=False, default=dict)
    smallest_partition = models.CharField(max_length=4, null=True, blank=True, editable=False)
    replicas_per_gpu = models.JSONField(editable=False, default=dict)
    gpus_needed = models.PositiveIntegerField(editable=False, default=1)
    per_gpu_gb = models.FloatField(editable=False, default=0, help_text="Memory per GPU at gpus_needed GPUs (GiB).")
    computed_at = models.DateTimeField(null=True, editable=False)

    objects = ModelProfileQuerySet.as_manager()

    class Meta:
        ordering = ("model__hf_id", "precision__sort_order", "gpu_model", "context_tokens", "concurrent_sequences")
        constraints = [
            models.UniqueConstraint(
                fields=("model", "precision", "gpu_model", "context_tokens", "concurrent_sequences"),
                name="profile_unique_inputs",
            ),
            models.CheckConstraint(condition=Q(context_tokens__gt=0), name="profile_context_positive"),
            models.CheckConstraint(condition=Q(concurrent_sequences__gt=0), name="profile_concurrency_positive"),
            models.CheckConstraint(condition=Q(gpu_model__in=list(GPU_MODELS)), name="profile_gpu_model_known"),
        ]

    def __str__(self) -> str:
        return f"{self.model.hf_id} {self.precision.code} on {self.gpu_model} ({self.context_tokens}x{self.concurrent_sequences})"

    def clean(self) -> None:
        if self.model_id and self.precision_id and not ModelPrecision.objects.filter(
            model_id=self.model_id, precision_id=self.precision_id
        ).exists():
            offered = ", ".join(self.model.precisions.values_list("code", flat=True)) or "none"
            raise ValidationError(
                {"precision": f"{self.model.hf_id} is not offered in {self.precision.code}; offered: {offered}."}
            )

    @property
    def replica_memory_gb(self) -> float:
        """GiB one replica holds on each GPU or partition it uses (models/sizing.py)."""
        return replica_gb_per_gpu(self.memory_required_gb, self.gpus_needed, self.per_gpu_gb)

    @property
    def partition_memory_estimated(self) -> bool:
        """Whether the GPU's per-partition memory is a nominal figure (see geometry)."""
        return "partition_memory" in SPECS[self.gpu_model].estimated_fields
