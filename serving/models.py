"""Deployments: a model profile served with N replicas, each replica on partitions."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class DeploymentQuerySet(models.QuerySet["Deployment"]):
    def active(self) -> DeploymentQuerySet:
        return self.filter(state__in=Deployment.ACTIVE_STATES)

    def with_related(self) -> DeploymentQuerySet:
        return self.select_related("profile__model", "profile__precision", "requested_by").prefetch_related(
            models.Prefetch("slots", queryset=DeploymentSlot.objects.select_related("partition__gpu__node").order_by("replica", "partition__logical_index"))
        )


class Deployment(models.Model):
    """A model profile served with N replicas on partitions.

    States: ``pending`` (waiting for its partitions, e.g. a plan's reconfigurations) →
    ``scheduled`` (partitions bound) → ``running`` (started on the node) → ``stopped`` |
    ``failed``. Allowed transitions are in ``TRANSITIONS``; services refuse others.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    ACTIVE_STATES = ("pending", "scheduled", "running")
    TRANSITIONS = {
        "pending": {"scheduled", "failed", "stopped"},
        "scheduled": {"running", "failed", "stopped"},
        "running": {"stopped", "failed"},
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
    planned_slots = models.JSONField(default=list, blank=True, help_text="Where a plan puts the replicas before the partitions exist.")
    plan = models.ForeignKey("planning.Plan", on_delete=models.SET_NULL, null=True, blank=True, related_name="deployments")
    requested_by = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        db_table = "partitions_deployment"  # moved from the partitions app; the table kept its name
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=("name",), condition=Q(state__in=("pending", "scheduled", "running")),
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
    one replica (enforced by the database); rows are deleted when the deployment stops."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="slots")
    replica = models.PositiveSmallIntegerField()
    partition = models.OneToOneField("partitions.Partition", on_delete=models.CASCADE, related_name="slot")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the node's agent started this replica.")

    class Meta:
        db_table = "partitions_deploymentslot"  # moved from the partitions app; the table kept its name
        ordering = ("deployment", "replica")

    def __str__(self) -> str:
        return f"{self.deployment.name}[{self.replica}] on {self.partition}"


