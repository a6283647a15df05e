"""Template tags for partition modes: how far a (compute, memory) pair is vouched for."""

from __future__ import annotations

from django import template

from partitions.geometry import GeometryError, Validation, get_spec

register = template.Library()


@register.simple_tag
def pair_validation(gpu_model: str, compute: str, memory: str) -> dict[str, str] | None:
    """``{"status": "driver_allowed", "label": "driver-allowed, not AMD-validated"}`` for a pair
    of ``gpu_model`` that is not simply AMD-validated (None when it is, or is no pair at all)."""
    if not gpu_model or not compute or not memory:
        return None
    try:
        status = get_spec(gpu_model).validation(compute, memory)
    except (GeometryError, ValueError):
        return None
    if status is None or status is Validation.VALIDATED:
        return None
    return {"status": status.value, "label": status.label}
