from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django import template

from aimconsole.audit import escape_control

register = template.Library()


@register.filter
def visible_controls(value: Any) -> str:
    """Control/bidi characters shown as escapes (then auto-escaped as HTML as usual)."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return escape_control("" if value is None else value)


@register.filter
def on_emulated_node(deployment: Any) -> bool:
    """Whether any partition a deployment holds (retiring slots included) is on an emulated node.

    Reads ``deployment.slots.all()``: no query per row where the caller prefetched the slots
    with their node (``Deployment.objects.with_related()`` does)."""
    return any(slot.partition.gpu.node.emulated for slot in deployment.slots.all())


@register.filter
def duration_words(value: timedelta) -> str:
    """A duration in words down to the second, largest unit first: "1 hour 30 minutes".
    Hours are not folded into days: a lockout reads "24 hours"."""
    seconds = max(0, round(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in ((hours, "hour"), (minutes, "minute"), (seconds, "second")) if n]
    return " ".join(parts) or "0 seconds"
