"""Whole numbers from untrusted text, within the range a database column holds.

``int("1180591620717411303424")`` is fine in Python and an OverflowError or IntegrityError in
the database; ``"1.5"`` silently becomes 1 in an integer lookup. Query parameters and form
fields that name a row or count something go through ``parse_integer`` first. Pure module.
"""

from __future__ import annotations

import re

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_WHOLE = re.compile(r"[+-]?\d{1,19}")  # 19 digits: enough for any 64-bit value, no more


def parse_integer(raw: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """``raw`` as an int within [minimum, maximum]; ValueError with a message for people
    (without the parameter's name: the caller knows it) otherwise."""
    text = raw.strip()
    shown = text if len(text) <= 40 else text[:40] + "…"
    if not _WHOLE.fullmatch(text):
        if re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f"{shown} is out of range: give a whole number from {minimum} to {maximum}")
        raise ValueError(f"{shown!r} is not a whole number")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"{value} is out of range: give a whole number from {minimum} to {maximum}")
    return value
