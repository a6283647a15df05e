"""Celery tasks of the planning app (queue ``console``). Thin: ids in, call the service."""

from __future__ import annotations

from celery import shared_task

from planning import dispatch


@shared_task(name=dispatch.COMPUTE_PLAN, acks_late=True)
def compute_plan_task(plan_id: int) -> str:
    """Fill in a plan that ``request_plan`` left planning (a second delivery is a no-op)."""
    from planning.services import compute_plan

    plan = compute_plan(plan_id=plan_id)
    return "gone" if plan is None else plan.state
