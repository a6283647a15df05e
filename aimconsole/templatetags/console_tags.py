from __future__ import annotations

import json
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
