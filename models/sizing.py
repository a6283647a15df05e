"""Honest memory sizing for serving a model on AMD Instinct GPUs and their partitions.

Pure Python: imports only the standard library and ``partitions.geometry``.

Units, everywhere in this module:

- parameters in billions (``1e9``);
- memory in GiB (``2**30`` bytes), the unit ``partitions.geometry`` uses: a GPU sold as
  "192 GB" has 192 GiB of HBM (amd-smi prints 196592 MiB);
- context in tokens; KV-cache sizes in elements (per token, per layer) and bytes.

What is counted (``estimate_memory``):

- **weights** = total parameters x bytes per weight. For a mixture-of-experts model every
  expert stays resident, so the *total* parameter count decides memory; the active count
  (``active_params_b``) only affects compute per token. (The prototype sized DeepSeek-V3 by
  its 37B active parameters and got 105 GB for a 671B model; we must not.)
- **KV cache** = context tokens x concurrent sequences x layers x KV elements per token per
  layer x bytes per KV element. The KV dtype is the serving engine's (fp16/bf16 by default,
  ``SizingPolicy.kv_bytes``) and is independent of weight quantization: int4 weights do
  not shrink the KV cache.
- **runtime overhead** = a fixed part plus a fraction of the weights (``SizingPolicy``).

``fit`` then says which compute-partition modes of a GPU can hold one replica, and how
many whole GPUs tensor parallelism needs when none can.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from partitions.geometry import GpuSpec, get_spec

GIB: Final = 2**30
"""Bytes per GiB: the memory unit of this module and of ``partitions.geometry``."""

BYTES_PER_WEIGHT: Final[Mapping[str, float]] = {
    "fp16": 2.0,  # FP16 or BF16
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}
"""Bytes per parameter for each precision code of ``models/data/catalog.json``. Ignores the
small per-group scales of quantized formats (under 1-3 % of the weights)."""

ATTENTION_KINDS: Final = ("gqa", "mla")
"""``gqa``: multi-head or grouped-query attention (one K and one V vector per KV head);
``mla``: DeepSeek's multi-head latent attention (one compressed latent + one RoPE key)."""

GPUS_PER_NODE: Final = 8
SINGLE_NODE_TP_DEGREES: Final = (2, 4, 8)
MAX_GPUS: Final = 1024
"""``fit`` gives up (SizingError) beyond this many GPUs."""


class SizingError(ValueError):
    """Invalid sizing input, or a model that cannot be placed; the message is for an operator."""


def _check_number(name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SizingError(f"{name} must be a number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise SizingError(f"{name} must be finite, got {value!r}.")
    if positive and number <= 0:
        raise SizingError(f"{name} must be positive, got {value!r}.")
    if not positive and number < 0:
        raise SizingError(f"{name} must not be negative, got {value!r}.")
    return number


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SizingError(f"{name} must be a whole number, got {value!r}.")
    if value <= 0:
        raise SizingError(f"{name} must be positive, got {value!r}.")
    return value


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """What sizing needs to know about a model (from its Hugging Face config.json).

    Raises SizingError on construction when a field is missing, non-positive or
    inconsistent.
    """

    total_params_b: float
    """All parameters, in billions (every MoE expert included): decides weight memory."""
    active_params_b: float | None = None
    """Parameters used per token, in billions (MoE only; None for dense). Not used for
    memory; must not exceed ``total_params_b``."""
    num_layers: int
    """Transformer layers holding KV cache (config ``num_hidden_layers``)."""
    attention: str = "gqa"
    """One of ``ATTENTION_KINDS``."""
    num_kv_heads: int | None = None
    """KV heads (config ``num_key_value_heads``); required for ``gqa``."""
    head_dim: int | None = None
    """Elements per head; required for ``gqa``."""
    kv_lora_rank: int | None = None
    """Elements of the MLA compressed KV latent; required for ``mla`` (512 for DeepSeek-V3)."""
    qk_rope_head_dim: int | None = None
    """Elements of the MLA decoupled RoPE key; required for ``mla`` (64 for DeepSeek-V3)."""
    num_attention_heads: int | None = None
    """Query heads; when known, tensor parallelism within a node must divide it."""

    def __post_init__(self) -> None:
        total = _check_number("total_params_b", self.total_params_b)
        if self.active_params_b is not None:
            active = _check_number("active_params_b", self.active_params_b)
            if active > total:
                raise SizingError(
                    f"active_params_b ({active:g}B) exceeds total_params_b ({total:g}B): "
                    "a mixture-of-experts model keeps all its experts in memory, so its "
                    "total is the larger number."
                )
        _check_count("num_layers", self.num_layers)
        if self.attention not in ATTENTION_KINDS:
            raise SizingError(
                f"Unknown attention kind {self.attention!r}; expected one of "
                f"{', '.join(ATTENTION_KINDS)}."
            )
        if self.attention == "gqa":
            if self.num_kv_heads is None or self.head_dim is None:
                raise SizingError("gqa attention needs num_kv_heads and head_dim.")
            _check_count("num_kv_heads", self.num_kv_heads)
            _check_count("head_dim", self.head_dim)
        else:
            if self.kv_lora_rank is None or self.qk_rope_head_dim is None:
                raise SizingError(
                    "mla attention needs kv_lora_rank and qk_rope_head_dim (512 and 64 for "
                    "DeepSeek-V3/R1)."
                )
            _check_count("kv_lora_rank", self.kv_lora_rank)
            _check_count("qk_rope_head_dim", self.qk_rope_head_dim)
            for name in ("num_kv_heads", "head_dim"):
                value = getattr(self, name)
                if value is not None:
                    _check_count(name, value)
        if self.num_attention_heads is not None:
            heads = _check_count("num_attention_heads", self.num_attention_heads)
            if self.attention == "gqa" and heads % (self.num_kv_heads or 1):
                raise SizingError(
                    f"num_attention_heads ({heads}) must be a multiple of num_kv_heads "
                    f"({self.num_kv_heads}) for grouped-query attention."
                )

    FIELDS = ("total_params_b", "active_params_b", "num_layers", "attention", "num_kv_heads", "head_dim",
              "kv_lora_rank", "qk_rope_head_dim", "num_attention_heads")

    @classmethod
    def of(cls, source: object) -> ModelShape:
        """The shape of anything carrying these attributes (a catalog entry or row)."""
        return cls(**{name: getattr(source, name) for name in cls.FIELDS})

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """KV-cache elements one token adds to one layer.

        GQA/MHA: 2 x num_kv_heads x head_dim (one K and one V vector per KV head).
        MLA: kv_lora_rank + qk_rope_head_dim (one latent and one RoPE key shared by all
        heads; 512 + 64 = 576 for DeepSeek-V3/R1).
        """
        if self.attention == "mla":
            assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
            return self.kv_lora_rank + self.qk_rope_head_dim
        assert self.num_kv_heads is not None and self.head_dim is not None
        return 2 * self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class SizingPolicy:
    """Assumptions beyond weights and KV cache; override per deployment.

    Runtime overhead = ``overhead_fixed_gb`` + ``overhead_fraction`` x weights (GiB).
    The fixed part covers what every replica pays whatever its size: the HIP/ROCm context,
    the allocator's reserve and fragmentation, rccl/hipBLASLt workspaces. The proportional
    part covers what grows with the model: activations and temporary buffers of the
    largest layers, HIP-graph capture buffers, and quantization scales. The defaults
    (2 GiB + 10 %) sit inside the prototype's documented rule of thumb (ROCm overhead
    2-4 GB, activations ~1 GB); they are assumptions, not measurements on hardware, which
    is why they are configurable.

    ``kv_bytes`` is bytes per KV-cache element: 2 for an fp16/bf16 KV cache (the serving
    engine's default), 1 for an fp8 KV cache.
    """

    overhead_fixed_gb: float = 2.0
    """GiB per replica (per GPU under tensor parallelism)."""
    overhead_fraction: float = 0.10
    """Fraction of the weight memory added as overhead (0.10 = 10 %)."""
    kv_bytes: float = 2.0
    """Bytes per KV-cache element."""

    def __post_init__(self) -> None:
        _check_number("overhead_fixed_gb", self.overhead_fixed_gb, positive=False)
        _check_number("overhead_fraction", self.overhead_fraction, positive=False)
        _check_number("kv_bytes", self.kv_bytes)

    def overhead_gb(self, weights_gb: float) -> float:
        """Runtime overhead (GiB) of a replica whose weights take ``weights_gb`` GiB."""
        return self.overhead_fixed_gb + self.overhead_fraction * weights_gb


DEFAULT_POLICY: Final = SizingPolicy()


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory one replica needs, in GiB (2**30 bytes)."""

    weights_gb: float
    """All weights: total params x 1e9 x bytes per weight / 2**30."""
    kv_cache_gb: float
    """KV cache for context_tokens x concurrent_sequences tokens."""
    overhead_gb: float
    """Runtime overhead per ``SizingPolicy``."""
    total_gb: float
    """weights_gb + kv_cache_gb + overhead_gb."""
    kv_bytes_per_token: float
    """KV-cache bytes one token adds across all layers (bytes, not GiB)."""


def bytes_per_weight_for(precision: str | float) -> float:
    """Bytes per weight for a precision code of ``BYTES_PER_WEIGHT`` or a positive number."""
    if isinstance(precision, str):
        try:
            return BYTES_PER_WEIGHT[precision.strip().lower()]
        except KeyError:
            raise SizingError(
                f"Unknown precision {precision!r}; known: {', '.join(BYTES_PER_WEIGHT)}."
            ) from None
    return _check_number("bytes_per_weight", precision)


def estimate_memory(
    shape: ModelShape,
    bytes_per_weight: float | str,
    context_tokens: int = 8192,
    concurrent_sequences: int = 1,
    policy: SizingPolicy = DEFAULT_POLICY,
) -> MemoryEstimate:
    """Memory (GiB) to serve one replica of ``shape``.

    ``bytes_per_weight``: bytes per parameter (2 fp16/bf16, 1 fp8/int8, 0.5 int4) or one of
    those precision codes. ``context_tokens``: tokens of KV cache per sequence (prompt +
    output). ``concurrent_sequences``: sequences resident at once.

    weights = total_params_b x 1e9 x bytes_per_weight; KV = context_tokens x
    concurrent_sequences x num_layers x kv_elements_per_token_per_layer x policy.kv_bytes;
    overhead = policy.overhead_fixed_gb + policy.overhead_fraction x weights. All three are
    reported in GiB; ``kv_bytes_per_token`` in bytes.

    Raises SizingError for a non-positive size, context or concurrency.
    """
    per_weight = bytes_per_weight_for(bytes_per_weight)
    context = _check_count("context_tokens", context_tokens)
    sequences = _check_count("concurrent_sequences", concurrent_sequences)
    weights_gb = shape.total_params_b * 1e9 * per_weight / GIB
    kv_bytes_per_token = shape.num_layers * shape.kv_elements_per_token_per_layer * policy.kv_bytes
    kv_cache_gb = context * sequences * kv_bytes_per_token / GIB
    overhead_gb = policy.overhead_gb(weights_gb)
    return MemoryEstimate(
        weights_gb=weights_gb,
        kv_cache_gb=kv_cache_gb,
        overhead_gb=overhead_gb,
        total_gb=weights_gb + kv_cache_gb + overhead_gb,
        kv_bytes_per_token=kv_bytes_per_token,
    )


@dataclass(frozen=True)
class FitResult:
    """Where one replica fits on one GPU model; memory in GiB.

    Partitions are the isolation unit, so one replica occupies one whole partition.
    """

    gpu_model: str
    need_gb: float
    """Memory one replica needs on a single device (the estimate's total)."""
    fits: dict[str, bool]
    """Compute mode -> whether one partition of that mode holds one replica."""
    smallest_partition: str | None
    """The compute mode with the smallest partitions that still fit (the most replicas per
    GPU); None when not even the whole GPU (SPX) does."""
    replicas_per_gpu: dict[str, int]
    """Compute mode -> replicas per GPU: the partition count where it fits, else 0."""
    gpus_needed: int
    """1 when one GPU holds a replica; else the smallest workable tensor-parallel degree."""
    per_gpu_gb: float
    """Memory per GPU at ``gpus_needed`` GPUs (``need_gb`` when 1)."""
    tensor_parallel_note: str
    """How ``gpus_needed`` was reached, in words."""


def replica_gb_per_gpu(memory_required_gb: float, gpus_needed: int, per_gpu_gb: float) -> float:
    """What one replica holds on each GPU (or partition) it uses: the whole estimate on one
    device, its tensor-parallel share when it needs several. The one place for this rule:
    placement, the fit tables, the serving runtime and the metrics all call it."""
    if gpus_needed > 1 and per_gpu_gb:
        return per_gpu_gb
    return memory_required_gb


def _tp_degrees() -> list[int]:
    """Candidate GPU counts: 2, 4, 8 within a node, then 16, 24, 32, ... across nodes."""
    return list(SINGLE_NODE_TP_DEGREES) + list(
        range(2 * GPUS_PER_NODE, MAX_GPUS + 1, GPUS_PER_NODE)
    )


def _in_node_tp_problem(tp: int, shape: ModelShape) -> str | None:
    """Why ``tp``-way tensor parallelism inside a node cannot split this model, or None.

    Attention heads are split across ranks, so ``tp`` must divide num_attention_heads
    (when known). For GQA, vLLM also needs KV heads to split evenly (``tp`` divides
    num_kv_heads) or to be replicated evenly (num_kv_heads divides ``tp``).
    """
    heads = shape.num_attention_heads
    if heads is not None and heads % tp:
        return f"{heads} attention heads are not divisible by {tp}"
    kv = shape.num_kv_heads
    if shape.attention == "gqa" and kv is not None and kv % tp and tp % kv:
        return f"{kv} KV heads cannot be split or replicated evenly over {tp} ranks"
    return None


def _kv_divisor(tp: int, pp: int, shape: ModelShape) -> int:
    """How many ways the KV cache is actually divided over tp x pp GPUs.

    Pipeline stages split layers, so they divide the KV cache. Tensor parallelism splits
    KV heads: with GQA, ranks beyond num_kv_heads hold replicas of a KV head, so the cache
    is divided min(tp, num_kv_heads) ways; with MLA the latent is shared by all heads and
    every rank keeps a full copy (vLLM), so tensor parallelism does not divide it at all.
    """
    if shape.attention == "mla":
        return pp
    assert shape.num_kv_heads is not None
    return pp * min(tp, shape.num_kv_heads)


def fit(
    estimate_or_need: MemoryEstimate | float,
    shape: ModelShape,
    spec: GpuSpec | str,
    policy: SizingPolicy = DEFAULT_POLICY,
) -> FitResult:
    """Where one replica of ``shape`` fits on GPU ``spec`` (a GpuSpec or a model name).

    ``estimate_or_need`` is a MemoryEstimate from ``estimate_memory`` (made with the same
    ``policy``) or a plain need in GiB. Partition fit: need <= the partition's memory
    (``GpuSpec.smallest_partition_gb``).

    When no single GPU holds a replica, ``gpus_needed`` is the smallest GPU count t in
    2, 4, 8 (tensor parallelism inside one 8-GPU node), then 16, 24, 32, ... (several
    nodes) whose per-GPU need fits one whole GPU (``spec.memory_gb``):

        per_gpu(t) = weights x (1 + overhead_fraction) / t + kv / kv_divisor(t)
                     + overhead_fixed_gb

    i.e. weights, KV and the proportional overhead are split t ways while every GPU pays
    the fixed overhead. The KV cache is split fewer ways when tensor parallelism cannot
    split it (see ``_kv_divisor``: MLA latents are replicated on every TP rank; GQA splits
    at most num_kv_heads ways). With a plain GiB need instead of an estimate, everything
    but the fixed overhead is assumed to split t ways: (need - fixed) / t + fixed.

    Constraints: inside a node t must divide num_attention_heads (when known) and fit the
    KV heads (``_in_node_tp_problem``); degrees that do not are skipped and the note says
    so. Beyond 8 GPUs we assume tensor parallelism inside each node (the largest workable
    degree <= 8) and pipeline parallelism across nodes (t / that degree stages, at most one
    per layer).

    Raises SizingError when the fixed overhead alone fills a GPU, when the estimate was made
    with a different policy, or when more than MAX_GPUS GPUs would be needed.
    """
    gpu = spec if isinstance(spec, GpuSpec) else get_spec(spec)
    if isinstance(estimate_or_need, MemoryEstimate):
        estimate = estimate_or_need
        expected_overhead = policy.overhead_gb(estimate.weights_gb)
        if not math.isclose(estimate.overhead_gb, expected_overhead, rel_tol=1e-9, abs_tol=1e-9):
            raise SizingError(
                f"The estimate's overhead ({estimate.overhead_gb:.2f} GiB) does not match the "
                f"policy passed to fit() ({expected_overhead:.2f} GiB): pass the SizingPolicy "
                "used for estimate_memory()."
            )
        need = estimate.total_gb
        weights: float | None = estimate.weights_gb
        kv = estimate.kv_cache_gb
    else:
        need = _check_number("need (GiB)", estimate_or_need)
        weights = None
        kv = 0.0

    fits: dict[str, bool] = {}
    replicas: dict[str, int] = {}
    for mode in gpu.compute_modes:
        ok = need <= gpu.smallest_partition_gb(mode)
        fits[mode.value] = ok
        replicas[mode.value] = gpu.partition_count(mode) if ok else 0
    smallest = next((m.value for m in gpu.modes_by_partition_size() if fits[m.value]), None)

    whole = float(gpu.memory_gb)
    if need <= whole:
        if smallest is not None:
            size = gpu.smallest_partition_gb(smallest)
            note = (
                f"Fits one {smallest} partition ({size:g} GiB) of an {gpu.model}: "
                f"{replicas[smallest]} replica(s) per GPU; no tensor parallelism needed."
            )
        else:  # pragma: no cover - SPX always equals the whole GPU
            note = f"Fits one whole {gpu.model}; no tensor parallelism needed."
        return FitResult(gpu.model, need, fits, smallest, replicas, 1, need, note)

    fixed = policy.overhead_fixed_gb
    if fixed >= whole:
        raise SizingError(
            f"The fixed overhead ({fixed:g} GiB per GPU) leaves no room on an {gpu.model} "
            f"({whole:g} GiB)."
        )

    def per_gpu(tp: int, pp: int) -> float:
        t = tp * pp
        if weights is None:
            return (need - fixed) / t + fixed
        return weights * (1 + policy.overhead_fraction) / t + kv / _kv_divisor(tp, pp, shape) + fixed

    skipped: list[str] = []
    node_tp = next(
        (d for d in (8, 4, 2, 1) if d == 1 or _in_node_tp_problem(d, shape) is None), 1
    )
    for t in _tp_degrees():
        if t <= GPUS_PER_NODE:
            problem = _in_node_tp_problem(t, shape)
            if problem:
                skipped.append(f"TP {t} skipped: {problem}")
                continue
            tp, pp = t, 1
        else:
            tp, pp = node_tp, t // node_tp
            if pp > shape.num_layers:
                break
        per = per_gpu(tp, pp)
        if per <= whole:
            if pp == 1:
                how = f"tensor parallel {tp} in one node"
            else:
                how = (
                    f"{t // GPUS_PER_NODE} nodes: tensor parallel {tp} within a node x "
                    f"{pp} pipeline stages (assumed layout)"
                )
            parts = [
                f"Needs {need:.1f} GiB, more than one {gpu.model} ({whole:g} GiB): "
                f"{t} GPUs ({how}), {per:.1f} GiB per GPU."
            ]
            if weights is not None and kv > 0 and _kv_divisor(tp, pp, shape) < t:
                if shape.attention == "mla":
                    parts.append("MLA KV latent is replicated on every tensor-parallel rank.")
                else:
                    parts.append(
                        f"KV cache splits only {_kv_divisor(tp, pp, shape)} ways "
                        f"({shape.num_kv_heads} KV heads)."
                    )
            parts.extend(s + "." for s in skipped)
            return FitResult(gpu.model, need, fits, None, replicas, t, per, " ".join(parts))
    raise SizingError(
        f"Needs {need:.1f} GiB: no layout of up to {MAX_GPUS} {gpu.model} GPUs holds one "
        "replica; reduce context, concurrency or precision."
    )
