"""Inventory: nodes, their physical GPUs and the partitions (logical devices) each exposes.

Rows mirror what a backend last reported; ``partitions.services.sync_inventory`` is the only
writer of the hardware-derived fields.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from partitions import operations
from partitions.geometry import ComputeMode, MemoryMode

node_name_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$",
    "Node names are lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (as Kubernetes node names).",
)

COMPUTE_CHOICES = [(m.value, m.value) for m in ComputeMode]
MEMORY_CHOICES = [(m.value, m.value) for m in MemoryMode]

# An agent that has not reported for this long is shown as stale.
AGENT_STALE_AFTER = timedelta(seconds=30)


class NodeQuerySet(models.QuerySet["Node"]):
    def with_inventory(self) -> NodeQuerySet:
        return self.prefetch_related("gpus__partitions")


class Node(models.Model):
    """A GPU server. ``emulated`` nodes run the amd-smi emulator and are labelled as such."""

    class Backend(models.TextChoices):
        AMDSMI = "amdsmi", "amd-smi (real hardware)"
        EMULATOR = "emulator", "amd-smi emulator"
        SIMULATED = "simulated", "simulated fleet (in-process)"
        IMPORTED = "imported", "imported from captured amd-smi output"

    class ServingRuntime(models.TextChoices):
        """How the node runs model replicas (serving/runtime/): ``emulated`` simulates them in
        the amd-smi emulator's state (no process; for scale tests); ``process`` runs one
        serving process per replica under the node agent (vLLM on real nodes, the engine
        emulator on emulated ones); ``kubernetes`` renders KServe InferenceServices."""

        EMULATED = "emulated", "Emulated (simulated, no process)"
        PROCESS = "process", "Process (supervised by the node agent)"
        KUBERNETES = "kubernetes", "Kubernetes (KServe)"

    # The runtime a node gets when its ``runtime`` is blank: real nodes run vLLM processes;
    # emulator nodes simulate replicas unless set to ``process`` (the demo's nodes are: they run
    # the engine emulator and serve real HTTP); imported nodes run nothing.
    DEFAULT_RUNTIMES = {"amdsmi": "process", "emulator": "emulated", "simulated": "emulated"}

    name = models.CharField(max_length=63, unique=True, validators=[node_name_validator])
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.AMDSMI)
    emulated = models.BooleanField(
        default=False, help_text="The GPUs are emulated or simulated, not real hardware."
    )
    backend_options = models.JSONField(
        default=dict, blank=True, help_text="Backend settings, e.g. the emulator's state file."
    )
    runtime = models.CharField(
        max_length=12, choices=ServingRuntime.choices, blank=True,
        help_text="How its replicas run; blank: by backend (process on amd-smi nodes, emulated on emulator and simulated ones).",
    )
    amd_smi_version = models.CharField(max_length=100, blank=True)
    rocm_version = models.CharField(max_length=40, blank=True)
    memory_mode = models.CharField(
        max_length=4, choices=MEMORY_CHOICES, blank=True,
        help_text="Node-level NPS mode (a change reloads the driver for every GPU of the node).",
    )
    agent_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.TextField(blank=True)
    layout_problem = models.TextField(
        blank=True, help_text="Why the node's GPUs are not in a valid layout (e.g. mixed NPS after a partial change); the node is not schedulable while set."
    )
    # One agent per node: the agent takes this lease at start and renews it with every
    # heartbeat; the token only ever goes up, so a stale holder's checks fail (fencing).
    agent_lease_holder = models.CharField(max_length=200, blank=True, help_text="host:pid of the agent holding the node.")
    agent_lease_token = models.PositiveBigIntegerField(default=0)
    agent_lease_expires_at = models.DateTimeField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True, help_text="Last reconciliation sync by the node's agent.")
    reconcile_changes = models.JSONField(
        default=list, blank=True, help_text="What the last reconciliation sync corrected in the inventory (empty: nothing)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = NodeQuerySet.as_manager()

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def serving_runtime(self) -> str:
        """The runtime its replicas run on: ``runtime``, or the backend's default ("" when the
        console cannot run replicas there, e.g. an imported node)."""
        return self.runtime or self.DEFAULT_RUNTIMES.get(self.backend, "")

    @property
    def schedulable(self) -> bool:
        return not self.layout_problem

    @property
    def agent_alive(self) -> bool:
        return self.agent_heartbeat_at is not None and timezone.now() - self.agent_heartbeat_at < AGENT_STALE_AFTER


class GPU(models.Model):
    """One physical GPU on a node, with the modes it is in and may switch to."""

    class Health(models.TextChoices):
        HEALTHY = "healthy", "Healthy"
        UNHEALTHY = "unhealthy", "Unhealthy"
        UNKNOWN = "unknown", "Unknown"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField(help_text="Physical index on the node, in PCI order.")
    gpu_model = models.CharField(
        max_length=16, blank=True, help_text="Geometry key (MI300X…); empty when not recognised."
    )
    market_name = models.CharField(max_length=100, blank=True)
    bdf = models.CharField(max_length=32, blank=True)
    uuid = models.CharField(max_length=64, blank=True)
    gfx_target = models.CharField(max_length=16, blank=True)
    compute_mode = models.CharField(max_length=4, choices=COMPUTE_CHOICES, blank=True)
    memory_mode = models.CharField(max_length=4, choices=MEMORY_CHOICES, blank=True)
    memory_caps = models.JSONField(default=list, blank=True, help_text="Memory modes the hardware reports as possible.")
    accelerator_profiles = models.JSONField(default=list, blank=True)
    compute_units = models.PositiveIntegerField(null=True, blank=True)
    vram_mb = models.PositiveIntegerField(null=True, blank=True)
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_reason = models.TextField(blank=True)
    schedulable = models.BooleanField(default=True)
    pending_memory_mode = models.CharField(
        max_length=4, choices=MEMORY_CHOICES, blank=True,
        help_text="NPS mode armed in the hardware but not active until the next driver reload (when the backend reports it).",
    )
    health_check_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="An operator asked the agent to re-read the GPU and clear it if healthy; unset once checked."
    )

    class Meta:
        ordering = ("node__name", "index")
        verbose_name = "GPU"
        constraints = [
            models.UniqueConstraint(fields=("node", "index"), name="gpu_unique_index_per_node"),
        ]

    def __str__(self) -> str:
        return f"{self.node.name}/gpu{self.index}"


class Partition(models.Model):
    """A logical device: one partition of a GPU (the whole GPU in SPX).

    ``logical_index`` is the node-global index amd-smi, ROCR_VISIBLE_DEVICES and
    HIP_VISIBLE_DEVICES use. ``memory_gb`` is the nominal share from geometry (GiB);
    ``reported_memory_mb`` is what amd-smi printed (primaries on ROCm ≥ 6.4.1 report the whole GPU).
    """

    gpu = models.ForeignKey(GPU, on_delete=models.CASCADE, related_name="partitions")
    index = models.PositiveSmallIntegerField(help_text="Partition id on the GPU (PCI function digit).")
    logical_index = models.PositiveIntegerField()
    xcds = models.PositiveSmallIntegerField(null=True, blank=True)
    compute_units = models.PositiveIntegerField(null=True, blank=True)
    memory_gb = models.FloatField(null=True, blank=True)
    reported_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    render_node = models.CharField(max_length=32, blank=True)
    uuid = models.CharField(max_length=64, blank=True)
    bdf = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ("gpu__node__name", "gpu__index", "index")
        constraints = [
            models.UniqueConstraint(fields=("gpu", "index"), name="partition_unique_index_per_gpu"),
            models.CheckConstraint(condition=Q(memory_gb__isnull=True) | Q(memory_gb__gt=0), name="partition_memory_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.gpu}/p{self.index}"


class ReconfigurationQuerySet(models.QuerySet["Reconfiguration"]):
    def active(self) -> ReconfigurationQuerySet:
        return self.filter(state__in=operations.ACTIVE_STATES)

    def with_related(self) -> ReconfigurationQuerySet:
        return self.select_related("node", "gpu", "requested_by").prefetch_related("steps")


class Reconfiguration(models.Model):
    """One request to change partitioning: a GPU's compute mode, or a node's memory (NPS) mode.

    ``state`` follows partitions/operations.py (transitions checked in
    ``partitions.services``). Workers write only while they hold the current
    ``fencing_token``; a claim increments it, so a stale worker's writes match no row.
    """

    class Kind(models.TextChoices):
        COMPUTE = "compute", "GPU compute mode"
        MEMORY = "memory", "Node memory (NPS) mode"

    class State(models.TextChoices):
        PENDING = operations.PENDING, "Pending"
        DRAINING = operations.DRAINING, "Draining"
        APPLYING = operations.APPLYING, "Applying"
        VERIFYING = operations.VERIFYING, "Verifying"
        SUCCEEDED = operations.SUCCEEDED, "Succeeded"
        FAILED = operations.FAILED, "Failed"
        ROLLED_BACK = operations.ROLLED_BACK, "Rolled back"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="reconfigurations")
    gpu = models.ForeignKey(GPU, on_delete=models.SET_NULL, null=True, blank=True, related_name="reconfigurations")
    gpu_index = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Kept if the GPU row goes away.")
    target_compute_mode = models.CharField(max_length=4, choices=COMPUTE_CHOICES, blank=True)
    target_memory_mode = models.CharField(max_length=4, choices=MEMORY_CHOICES, blank=True)
    previous_layout = models.JSONField(default=dict, blank=True, help_text="Modes read before applying: the rollback target.")
    drain = models.BooleanField(default=False, help_text="Stop workloads on the affected partitions instead of refusing.")
    reason = models.CharField(max_length=500, blank=True)
    requested_by = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    plan = models.ForeignKey("planning.Plan", on_delete=models.SET_NULL, null=True, blank=True, related_name="reconfigurations")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    fencing_token = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="Last time a message was sent to the node's queue.")
    apply_deadline_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Set when an NPS change starts applying: until then the driver reload may still be running, so a resumed worker waits for the GPUs.",
    )
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ReconfigurationQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            # One active operation per GPU, and one active NPS change per node: enforced by the
            # database, whatever the workers or Redis do.
            models.UniqueConstraint(
                fields=("gpu",), condition=Q(state__in=operations.ACTIVE_STATES, gpu__isnull=False),
                name="reconfiguration_one_active_per_gpu",
            ),
            models.UniqueConstraint(
                fields=("node",), condition=Q(state__in=operations.ACTIVE_STATES, kind="memory"),
                name="reconfiguration_one_active_nps_per_node",
            ),
            models.CheckConstraint(
                condition=(Q(kind="compute") & Q(gpu_index__isnull=False) & ~Q(target_compute_mode=""))
                | (Q(kind="memory") & ~Q(target_memory_mode="")),
                name="reconfiguration_target_matches_kind",
            ),
            models.CheckConstraint(condition=Q(state__in=operations.STATES), name="reconfiguration_state_known"),
        ]

    def __str__(self) -> str:
        return f"reconfiguration #{self.pk} ({self.describe_target()}, {self.state})"

    def describe_target(self) -> str:
        if self.kind == self.Kind.MEMORY:
            extra = f" then {self.target_compute_mode}" if self.target_compute_mode else ""
            return f"{self.node.name} → {self.target_memory_mode}{extra}"
        return f"{self.node.name}/gpu{self.gpu_index} → {self.target_compute_mode}"

    @property
    def is_terminal(self) -> bool:
        return operations.is_terminal(self.state)

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class ReconfigurationStep(models.Model):
    """A timestamped step of an operation: what happened, in which state, with the tool's output."""

    reconfiguration = models.ForeignKey(Reconfiguration, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    state = models.CharField(max_length=12, choices=Reconfiguration.State.choices)
    action = models.CharField(max_length=16)
    message = models.TextField()
    output = models.TextField(blank=True)
    ok = models.BooleanField(default=True)
    fencing_token = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("reconfiguration", "seq")
        constraints = [
            models.UniqueConstraint(fields=("reconfiguration", "seq"), name="step_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.reconfiguration_id}.{self.seq} {self.action}: {self.message[:60]}"
