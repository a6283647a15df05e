"""JSON with bounded size and nesting, checked before parsing.

The standard library's parser recurses once per nesting level: a body of 100,000 ``[`` raises
``RecursionError`` (an HTTP 500, or a crashed import) instead of a parse error. ``loads``
measures size and depth first, without recursion, and raises a ``ValueError`` subclass with
the limit in its message. Used by the API's JSON parser (aimconsole.api.BoundedJSONParser)
and for JSON read from tools' outputs.

Strict JSON (RFC 8259): ``NaN`` and ``Infinity`` are refused. Pure module: no Django.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

# Bytes other than brackets are dropped; openers become +1, closers -1 (as signed bytes).
_KEEP = b"[]{}"
_DROP = bytes(b for b in range(256) if b not in _KEEP)
_SIGNED = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class JSONBoundsError(ValueError):
    """The document is larger or deeper than allowed (it was not parsed)."""


class JSONTooLarge(JSONBoundsError):
    pass


class JSONTooDeep(JSONBoundsError):
    pass


def _brackets(text: str) -> bytes:
    """The brackets of ``text`` outside string literals, in order."""
    # Escaped backslashes first, then escaped quotes: what is left has a quote only where a
    # string starts or ends, so every other piece between quotes is outside a string.
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(unescaped.split('"')[::2]).encode("utf-8", errors="surrogatepass")
    return outside.translate(None, _DROP)


def deeper_than(text: str, max_depth: int) -> bool:
    """Whether arrays/objects in ``text`` nest deeper than ``max_depth`` (brackets inside
    strings do not count). Linear and recursion-free, in C but for the rare last step.

    More than ``max_depth`` openers in a row settle it at once. Otherwise each pass deletes
    the innermost ``[]``/``{}`` pairs, so a well-formed document is gone after as many passes
    as it is deep. Whatever remains after ``max_depth`` passes is measured exactly, stopping
    at the first prefix deeper than the limit.
    """
    brackets = reduced = _brackets(text)
    if re.search(rb"[\[{]{%d}" % (max_depth + 1), brackets):
        return True  # that many openers in a row: deeper wherever they start (the usual attack)
    for _ in range(max_depth):
        shorter = reduced.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(reduced):
            break  # nothing left to pair: done, or unbalanced (then measured below)
        reduced = shorter
    if not reduced:
        return False
    depths = accumulate(array("b", brackets.translate(_SIGNED)))
    return next(filter(max_depth.__lt__, depths), None) is not None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes, *, max_depth: int, max_bytes: int) -> Any:
    """``json.loads`` for untrusted input: at most ``max_bytes`` bytes (UTF-8) and
    ``max_depth`` levels of arrays/objects. Raises JSONTooLarge / JSONTooDeep (both
    JSONBoundsError, a ValueError) before parsing, or ValueError (json.JSONDecodeError,
    UnicodeDecodeError) for invalid JSON."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise JSONTooLarge(f"JSON document of {size} bytes is larger than the limit of {max_bytes} bytes")
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if deeper_than(text, max_depth):
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text, parse_constant=_reject_constant)
