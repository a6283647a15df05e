"""Deployments: a model profile served with N replicas, each replica on partitions."""

from __future__ import annotations

from typing import Any

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from partitions.models import Node

# How a node runs replicas: a node setting (partitions.models.Node.ServingRuntime).
Runtime = Node.ServingRuntime


class DeploymentQuerySet(models.QuerySet["Deployment"]):
    def active(self) -> DeploymentQuerySet:
        return self.filter(state__in=Deployment.ACTIVE_STATES)

    def with_related(self) -> DeploymentQuerySet:
        return self.select_related("profile__model", "profile__precision", "requested_by").prefetch_related(
            models.Prefetch("slots", queryset=DeploymentSlot.objects.select_related("partition__gpu__node")
                            .order_by("replica", "partition__logical_index")),
            "moves",
            models.Prefetch("copies", queryset=Replica.objects.select_related("node").order_by("replica", "key")),
        )


class Deployment(models.Model):
    """A model profile served with N replicas on partitions.

    States: ``pending`` (waiting for its partitions, e.g. a plan's reconfigurations) →
    ``scheduled`` (partitions bound) → ``running`` (every replica started on its node) →
    ``stopped`` | ``failed``. ``degraded``: fewer replicas hold their partitions than asked
    (a drain stopped one, a stop-then-start move is between its stop and its start, or the
    partitions were removed under it, e.g. by an import); ``state_message`` says which replicas
    and why, and it is ``running`` again once every replica runs. ``failed`` when no replica is
    left and nothing will bring one back. Allowed transitions are in ``TRANSITIONS``; services
    refuse others.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        DEGRADED = "degraded", "Degraded"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    ACTIVE_STATES = ("pending", "scheduled", "running", "degraded")
    # Holding partitions (slots bound): what drains, placement and the node agents see.
    BOUND_STATES = ("scheduled", "running", "degraded")
    TRANSITIONS = {
        "pending": {"scheduled", "failed", "stopped"},
        "scheduled": {"running", "degraded", "failed", "stopped"},
        "running": {"degraded", "stopped", "failed"},
        "degraded": {"running", "stopped", "failed"},
        "stopped": set(),
        "failed": set(),
    }

    name = models.SlugField(max_length=63)
    profile = models.ForeignKey("catalog.ModelProfile", on_delete=models.PROTECT, related_name="deployments")
    replicas = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first and is never moved for a lower one.")
    spread = models.BooleanField(default=False, help_text="Replicas on different GPUs (and nodes when possible).")
    pin_node = models.ForeignKey("partitions.Node", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    pin_gpu_index = models.PositiveSmallIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    state_message = models.TextField(blank=True)
    runtime = models.CharField(max_length=12, choices=Runtime.choices, blank=True,
                               help_text="The runtime its replicas run on (the nodes' runtime when it was bound).")
    planned_slots = models.JSONField(default=list, blank=True, help_text="Where a plan puts the replicas before the partitions exist.")
    sizing_snapshot = models.JSONField(
        default=dict, blank=True,
        help_text="The profile's sizing when the deployment was placed (memory_required_gb, replica_memory_gb, "
                  "gpus_needed, parameters, context, precision...): what its partitions were chosen for.")
    plan = models.ForeignKey("planning.Plan", on_delete=models.SET_NULL, null=True, blank=True, related_name="deployments")
    requested_by = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        db_table = "partitions_deployment"  # moved from the partitions app; the table kept its name
        ordering = ("-created_at", "-id")
        # The list's keyset (newest first): a deep page is a seek on this index, not a sort.
        indexes = [models.Index(fields=["-created_at", "-id"], name="deployment_newest_first")]
        constraints = [
            models.UniqueConstraint(fields=("name",), condition=Q(state__in=("pending", "scheduled", "running", "degraded")),
                                    name="deployment_active_name_unique"),
            models.CheckConstraint(condition=Q(replicas__gte=1), name="deployment_replicas_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES


class DeploymentSlot(models.Model):
    """One partition held by one replica of an active deployment. A partition holds at most
    one replica (enforced by the database); rows are deleted when the replica stops.

    ``active``: the replica's home (started once ``started_at`` is set). ``retiring``: the old
    home of a replica moving make-before-break (``ReplicaMove``): it keeps serving until the
    new copy's active slots have started, then its node's agent stops it and deletes the row."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        RETIRING = "retiring", "Retiring (old copy of a moving replica)"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="slots")
    replica = models.PositiveSmallIntegerField()
    partition = models.OneToOneField("partitions.Partition", on_delete=models.CASCADE, related_name="slot")
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the node's agent started this replica.")

    class Meta:
        db_table = "partitions_deploymentslot"  # moved from the partitions app; the table kept its name
        ordering = ("deployment", "replica")

    def __str__(self) -> str:
        return f"{self.deployment.name}[{self.replica}] on {self.partition}"


class ReplicaQuerySet(models.QuerySet["Replica"]):
    def routable(self) -> ReplicaQuerySet:
        """Ready copies with an endpoint, of deployments that hold their partitions: what the
        gateway sends requests to."""
        return self.filter(state=Replica.State.READY, deployment__state__in=Deployment.BOUND_STATES).exclude(endpoint="")


class Replica(models.Model):
    """One running copy of a deployment's replica, as its node's runtime reports it.

    A replica is usually one copy; while it moves make-before-break it has two (the old one
    keeps serving until the new one is ready), so a row is keyed by the replica and the first
    partition of its copy (``key``). The node agent writes these rows from what its runtime
    sees; the gateway routes to ``ready`` rows (``endpoint``); pages, the API and the
    WebSocket show them. Rows of stopped copies stay ``stopped`` for a while (their reason and
    last log lines are what an operator reads) and are pruned by the agent.

    States: ``starting`` (process started, not healthy yet) → ``ready`` (``/health`` and
    ``/v1/models`` answer) → ``restarting`` (exited or stopped answering; restarted with
    backoff) → ``ready`` again, or ``failed`` (crashed too often, or never healthy within the
    start timeout: ``reason`` and ``log_tail`` say why); ``stopped`` when its slot is freed.
    """

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        READY = "ready", "Ready"
        RESTARTING = "restarting", "Restarting"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped"

    LIVE_STATES = ("starting", "ready", "restarting")

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="copies")
    replica = models.PositiveSmallIntegerField()
    node = models.ForeignKey("partitions.Node", on_delete=models.CASCADE, related_name="replica_copies")
    key = models.CharField(max_length=100, unique=True, help_text="<deployment id>-<replica>-<first partition id>.")
    partitions = models.JSONField(default=list, help_text="[{gpu_index, partition_index, logical_index}] of this copy.")
    runtime = models.CharField(max_length=12, choices=Runtime.choices)
    state = models.CharField(max_length=12, choices=State.choices, default=State.STARTING)
    endpoint = models.CharField(max_length=200, blank=True, help_text="Base URL of its OpenAI-compatible server (blank: none).")
    served_model = models.CharField(max_length=200, blank=True, help_text="The model name its server answers to.")
    pid = models.PositiveIntegerField(null=True, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    reason = models.TextField(blank=True, help_text="Why it is restarting, failed or stopped.")
    log_tail = models.TextField(blank=True, help_text="Its last log lines (on failure).")
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReplicaQuerySet.as_manager()

    class Meta:
        ordering = ("deployment", "replica", "key")
        indexes = [models.Index(fields=("state",), name="replica_state_idx")]

    def __str__(self) -> str:
        return f"{self.deployment.name}[{self.replica}] {self.state} on {self.node.name}"


class ReplicaMove(models.Model):
    """One replica of a deployment moving to other partitions because a plan repartitions the
    GPUs it is on (the deployment keeps its name and replica count).

    ``make_before_break``: its new partitions exist and are free now. Applying the plan binds
    them (the old slots become ``retiring``); the new copy's node agent starts it; once it has
    started, the old copy's node agent stops the old one. States: ``starting`` → ``done``.

    ``stop_then_start``: its new partitions appear only with the plan's reconfigurations (or
    are taken now). The old copy serves until the drain of its GPU stops it; the new slots are
    bound once the plan's reconfigurations succeeded and the planned modes are there, then its
    node agent starts it. States: ``waiting`` → ``stopped`` → ``starting`` → ``done``.

    Any active state → ``cancelled`` (the deployment stopped, or the plan's reconfigurations
    failed before the old copy was stopped: it stays where it is) or ``failed`` (the new
    partitions are not there; the deployment says ``degraded``).
    """

    class Strategy(models.TextChoices):
        MAKE_BEFORE_BREAK = "make_before_break", "Make before break"
        STOP_THEN_START = "stop_then_start", "Stop then start"

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting (old copy serving)"
        STOPPED = "stopped", "Stopped (waiting for its new partitions)"
        STARTING = "starting", "Starting the new copy"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    ACTIVE_STATES = ("waiting", "stopped", "starting")

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="moves")
    replica = models.PositiveSmallIntegerField()
    plan = models.ForeignKey("planning.Plan", on_delete=models.SET_NULL, null=True, blank=True, related_name="replica_moves")
    strategy = models.CharField(max_length=20, choices=Strategy.choices)
    state = models.CharField(max_length=10, choices=State.choices)
    source = models.JSONField(default=list, help_text="Where the replica was: [{node, gpu_index, partition_index}].")
    target = models.JSONField(default=list,
                              help_text="Where the plan puts it: [{node, gpu_index, partition_index, compute_mode, memory_gb}].")
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the new copy had started on every new partition.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("deployment", "replica", "-created_at")
        constraints = [
            models.UniqueConstraint(fields=("deployment", "replica"), condition=Q(state__in=("waiting", "stopped", "starting")),
                                    name="replica_move_one_active_per_replica"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment.name}[{self.replica}] {self.strategy} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    def describe_target(self) -> str:
        return describe_slots(self.target)


def describe_slots(slots: list[dict[str, Any]]) -> str:
    """``emu-1 GPU 2`` / ``emu-1 GPU 0/p3`` for a list of slot dicts (node, gpu_index, partition_index)."""
    return ", ".join(f"{s['node']} GPU {s['gpu_index']}" + ("" if s.get("partition_index") is None else f"/p{s['partition_index']}")
                     for s in slots)
