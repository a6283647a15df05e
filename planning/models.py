"""Plans: what-if results kept so that they can be applied later."""

from __future__ import annotations

from django.db import models


class Plan(models.Model):
    """A what-if plan (planning/planner.py) kept so it can be applied later, if the fleet
    has not changed since (``fingerprint``)."""

    class State(models.TextChoices):
        """planning -> draft | failed (a worker computes plans over large fleets);
        draft -> applied | stale."""

        PLANNING = "planning", "Planning"
        DRAFT = "draft", "Draft"
        APPLIED = "applied", "Applied"
        STALE = "stale", "Stale"
        FAILED = "failed", "Failed"

    request = models.JSONField(help_text="What was asked: target layouts and/or demands.")
    result = models.JSONField(help_text="The plan: changes, displaced deployments, capacity, steps, ETA.")
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=8, choices=State.choices, default=State.DRAFT)
    created_by = models.ForeignKey("auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "partitions_plan"  # moved from the partitions app; the table kept its name
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"plan #{self.pk} ({self.state})"
