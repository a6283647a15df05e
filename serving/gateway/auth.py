"""Bearer-key checks for the gateway: ``aimconsole.tokens.check_key(key, scope="inference")``
behind a small verdict cache keyed by the key's SHA-256 (the key itself is never kept).

Accepted keys are trusted for ``auth_ok_cache_s`` (30 s: a revoked token keeps working at most
that long on a process that saw it) and re-checked in the background once half of that has
passed, so a key in steady use never waits for the database after its first request; refused ones for ``auth_refused_cache_s`` (a few seconds:
a token created a moment ago is accepted soon, and a flood of bad keys costs one database read
per key per few seconds). The cache is bounded (least recently used dropped)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    status: int        # 200 accepted, 401 invalid, 403 missing scope
    message: str
    expires: float     # time.monotonic()


class VerdictCache:
    def __init__(self, size: int, ok_s: float, refused_s: float) -> None:
        self.size, self.ok_s, self.refused_s = size, ok_s, refused_s
        self._items: OrderedDict[str, Verdict] = OrderedDict()

    def get(self, digest: str) -> Verdict | None:
        verdict = self._items.get(digest)
        if verdict is None:
            return None
        if verdict.expires < time.monotonic():
            del self._items[digest]
            return None
        self._items.move_to_end(digest)
        return verdict

    def due(self, verdict: Verdict) -> bool:
        """An accepted verdict past half its lifetime: re-check it (in the background)."""
        return verdict.status == 200 and verdict.expires - time.monotonic() < self.ok_s / 2

    def put(self, digest: str, status: int, message: str) -> Verdict:
        verdict = Verdict(status, message, time.monotonic() + (self.ok_s if status == 200 else self.refused_s))
        self._items[digest] = verdict
        self._items.move_to_end(digest)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return verdict


def check(key: str) -> tuple[int, str]:
    """(status, message) for ``key``: a database read (run it in a thread)."""
    from django.db import close_old_connections

    from aimconsole.tokens import InvalidToken, MissingScope, check_key

    close_old_connections()
    try:
        check_key(key, scope="inference")
    except MissingScope as exc:
        return 403, str(exc)
    except InvalidToken as exc:
        return 401, str(exc)
    finally:
        close_old_connections()
    return 200, ""
