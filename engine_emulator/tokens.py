"""Token counting and the generated text of the emulated engine (pure functions).

Tokenizer: a token is a bracketed tag (``[emulated]``), a run of word characters, or a single
other non-space character; whitespace separates and counts for nothing. So ``"Hello, world!"``
is 4 tokens. It is deterministic and used for every count the engine reports: a completion
prompt is ``count_tokens(prompt)``; a chat prompt is the sum over messages of
``count_tokens(content) + CHAT_TOKENS_PER_MESSAGE`` plus ``CHAT_REPLY_PRIMER`` (what a chat
template adds around each turn and before the reply).

Generated text: the piece at position ``i`` of a sequence is ``FILLER[i % len(FILLER)]``; each
piece is exactly one token of the tokenizer, so ``count_tokens(text) == completion_tokens``
for an output that was not cut by a stop string. The first piece is ``[emulated]``, so any
reader sees that no model produced it.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\[\w+\]|\w+|[^\w\s]")
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_REPLY_PRIMER = 3

FILLER: tuple[str, ...] = (
    "[emulated]", " This", " text", " comes", " from", " the", " AIM", " engine", " emulator", ",",
    " not", " from", " a", " model", ".", " It", " stands", " in", " for", " vLLM", " so", " the",
    " console", " can", " serve", " real", " traffic", " without", " GPUs", ".",
)


def count_tokens(text: str) -> int:
    """Tokens in ``text`` by the emulator's tokenizer (see the module docstring)."""
    return len(_TOKEN.findall(text))


def chat_prompt_tokens(messages: list[dict]) -> int:
    """Prompt tokens of a chat request; ``content`` may be a string or a list of text parts."""
    total = CHAT_REPLY_PRIMER
    for message in messages:
        total += CHAT_TOKENS_PER_MESSAGE + count_tokens(message_text(message))
    return total


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def piece(index: int) -> str:
    """The text of generated token number ``index`` (0-based) of a sequence."""
    return FILLER[index % len(FILLER)]


def apply_stop(text: str, new_piece: str, stop: list[str]) -> tuple[str, bool]:
    """Append ``new_piece`` to ``text``; if a stop string now appears, the text is cut just
    before the earliest one (vLLM leaves it out of the output; the cut may fall inside text
    generated earlier, which is why streams hold back ``stop_holdback`` characters). Returns
    (new text, whether a stop string ended the sequence)."""
    candidate = text + new_piece
    hits = [i for i in (candidate.find(s, max(0, len(text) - len(s) + 1)) for s in stop if s) if i >= 0]
    if not hits:
        return candidate, False
    return candidate[:min(hits)], True


def stop_holdback(stop: list[str]) -> int:
    """Characters a stream keeps unsent so that a stop string completed by a later token never
    leaves a prefix of it already sent (as vLLM's detokenizer buffers)."""
    return max(0, max((len(s) for s in stop), default=0) - 1)
