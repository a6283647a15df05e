"""Server-sent events as the OpenAI-compatible engines stream them (``data: {json}\\n\\n`` …
``data: [DONE]\\n\\n``): finding event boundaries in raw bytes, and the one chunk worth parsing
(the final ``usage`` chunk). Pure Python; no per-token JSON decoding."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# A usage object (not "usage": null). Quotes inside JSON strings are escaped, so generated text
# cannot produce this byte sequence.
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_LF, _CRLF = b"\n\n", b"\r\n\r\n"
DONE = b"data: [DONE]\n\n"


def complete_prefix(buf: bytes) -> int:
    """Length of the leading run of complete events in ``buf`` (0: none complete yet)."""
    lf = buf.rfind(_LF)
    crlf = buf.rfind(_CRLF)
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def count_events(block: bytes) -> int:
    """Events in a block of complete events (separators; JSON escapes newlines in strings)."""
    return block.count(_LF) or block.count(_CRLF)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _data(event: bytes) -> bytes:
    start = event.find(b"{")
    return event[start:] if start >= 0 else b""


def take_usage(block: bytes, *, keep: bool) -> tuple[bytes, Usage | None, int]:
    """Find the usage in ``block`` (complete events). Returns the block to forward (without
    usage-only events unless ``keep``), the usage (None: none in this block) and how many
    events were dropped."""
    if not _USAGE.search(block):
        return block, None, 0
    sep = _LF if _LF in block else _CRLF
    events = block.split(sep)
    tail = events.pop()  # b"" after the last separator
    kept: list[bytes] = []
    usage: Usage | None = None
    dropped = 0
    for event in events:
        if not _USAGE.search(event):
            kept.append(event)
            continue
        try:
            chunk = json.loads(_data(event))
            u = chunk.get("usage") or {}
            usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
        except (ValueError, AttributeError, TypeError):
            kept.append(event)
            continue
        if keep or chunk.get("choices"):
            kept.append(event)
        else:
            dropped += 1
    out = sep.join(kept) + sep if kept else b""
    return out + tail, usage, dropped


def error_event(message: str, code: str = "upstream_error") -> bytes:
    """An OpenAI-shaped error as one SSE event, then the end of the stream."""
    body = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
    return f"data: {body}\n\n".encode() + DONE
