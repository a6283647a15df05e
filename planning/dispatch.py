"""Sending the planning app's Celery tasks, by name: services never import tasks.

Plans over large fleets are computed on the console's worker queue (``CONSOLE_QUEUE``), never
on a node agent's queue: a plan touches no hardware.
"""

from __future__ import annotations

from aimconsole.celery import app

COMPUTE_PLAN = "planning.compute_plan"
CONSOLE_QUEUE = "console"


def send_compute_plan(plan_id: int) -> None:
    """Raise what the broker raises when it is unreachable (the caller computes it instead)."""
    app.send_task(COMPUTE_PLAN, args=[plan_id], queue=CONSOLE_QUEUE, retry=False)
