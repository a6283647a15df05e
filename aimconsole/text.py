"""Showing untrusted text: control and bidi characters made visible.

Usernames typed at a failed sign-in, object names and imported outputs end up in audit rows.
A raw ESC, CR or right-to-left override would act on the terminal or page that shows them
(hide the rest of a line, rewrite it, reverse it), so every place that shows such a field
shows it through ``escape_control``.
"""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_control(value: Any) -> str:
    """Control and bidi characters shown as visible escapes (``\\x1b``) instead of acting;
    tab and newline are left as they are."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        str(value))


def storable(text: str) -> str:
    """Tool output as a text column can hold it: PostgreSQL refuses NUL bytes, which garbled
    amd-smi output may contain; they are kept visible as the two characters ``\\0``."""
    return text.replace("\x00", "\\0")
