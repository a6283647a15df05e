"""Template context processor: the fleet banner every page shows when a node's agent is down
or its telemetry is stale, linking to the fleet page.

Cheap by construction, as it runs on every page: one query (the nodes' names and heartbeats)
and one Redis round trip (a script reading the head of each snapshot, where its time is); nothing for anonymous users, users who
may not see the fleet, or htmx fragment requests (they render no base.html).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from partitions.models import AGENT_STALE_AFTER, Node
from partitions.telemetry_store import snapshot_key

# A snapshot older than this is stale: agents sample every TELEMETRY_INTERVAL_S (1 s by
# default), so 10 s is several missed samples; a slower configured interval gets 3 of its own.
TELEMETRY_STALE_AFTER_S = 10.0
# The banner names this many nodes per line, then "and N more".
BANNER_NAMES = 5


def telemetry_stale_after_s() -> float:
    """Seconds after which a node's snapshot counts as stale (see TELEMETRY_STALE_AFTER_S)."""
    return max(TELEMETRY_STALE_AFTER_S, 3 * float(settings.TELEMETRY_INTERVAL_S))


def format_age(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h``, ``4 d``: short enough for a banner."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h"
    return f"{seconds // 86400:.0f} d"


@dataclass(frozen=True)
class NodeAlert:
    name: str
    emulated: bool
    detail: str  # "last heartbeat 3 min ago", "never seen", "no snapshot", "25 s old"


# The agents' snapshots start {"node": NAME, "ts": ...} (partitions/telemetry.py ``shape``):
# the banner reads that head of each (a node name is at most 63 characters), in Redis, not the
# whole sample of every partition (~8 KB per CPX node; 8 MB per page view at 1,000 nodes).
SNAPSHOT_HEAD_BYTES = 160
# Per key: "" (no snapshot), the text of its "ts" number, or "?" (none in the head: another
# writer's key order, or no usable time; read whole).
_HEAD_TIMES = """
local out = {}
for i, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, tonumber(ARGV[1]) - 1)
  if head == '' then out[i] = '' else
    out[i] = string.match(head, '"ts"%s*:%s*(%-?%d+%.?%d*[eE]?[-+]?%d*)%s*[,}]') or '?'
  end
end
return out
"""


def _snapshot_ts(raw: bytes) -> float | None:
    try:
        value = json.loads(raw).get("ts")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_snapshot_times(names: list[str]) -> dict[str, float | None] | None:
    """Each node's latest snapshot time (Unix seconds; None: no snapshot or no usable ``ts``)
    in one round trip that reads each snapshot's first ``SNAPSHOT_HEAD_BYTES`` in Redis (a
    second one, of the whole snapshot, for any whose head holds no ``ts``); None when Redis
    cannot be read."""
    if not names:
        return {}
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        answers = client.register_script(_HEAD_TIMES)(keys=[snapshot_key(name) for name in names], args=[SNAPSHOT_HEAD_BYTES])
        times: dict[str, float | None] = {}
        unsure = []
        for name, answer in zip(names, answers):
            text = answer.decode() if isinstance(answer, bytes) else str(answer)
            if text == "?":
                unsure.append(name)
            try:
                times[name] = float(text) if text not in ("", "?") else None
            except ValueError:
                unsure.append(name)
        if unsure:
            raws: list[bytes | None] = client.mget([snapshot_key(name) for name in unsure])  # type: ignore[assignment]  # sync client
            times.update({name: _snapshot_ts(raw) if raw is not None else None for name, raw in zip(unsure, raws)})
    except redis.RedisError:
        return None
    finally:
        client.close()
    return times


def fleet_alerts(request: HttpRequest) -> dict[str, Any]:
    """``fleet_alerts``: None when all is well (or the user may not see the fleet), else
    ``agents_down`` and ``stale`` (NodeAlert lists of at most BANNER_NAMES), ``*_more`` (how
    many more) and ``telemetry_unavailable`` (Redis could not be read). A node whose agent is
    down is named once, as down: its telemetry is missing for that very reason."""
    user = getattr(request, "user", None)
    # htmx requests render fragments without base.html: the banner would not show. has_perm
    # loads the permission cache that base.html's navigation reads anyway.
    if (user is None or not user.is_authenticated or request.headers.get("HX-Request")
            or not user.has_perm("partitions.view_node")):
        return {"fleet_alerts": None}
    rows = list(Node.objects.order_by("name").values_list("name", "emulated", "agent_heartbeat_at"))
    if not rows:
        return {"fleet_alerts": None}
    now_dt, now = timezone.now(), time.time()
    down, alive = [], []
    for name, emulated, heartbeat in rows:
        if heartbeat is None:
            down.append(NodeAlert(name, emulated, "never seen"))
        elif now_dt - heartbeat >= AGENT_STALE_AFTER:
            down.append(NodeAlert(name, emulated, f"last heartbeat {format_age((now_dt - heartbeat).total_seconds())} ago"))
        else:
            alive.append((name, emulated))
    times = read_snapshot_times([name for name, _ in alive])
    stale = []
    if times is not None:
        limit = telemetry_stale_after_s()
        for name, emulated in alive:
            ts = times.get(name)
            if ts is None:
                stale.append(NodeAlert(name, emulated, "no snapshot"))
            elif now - ts > limit:
                stale.append(NodeAlert(name, emulated, f"{format_age(now - ts)} old"))
    unavailable = times is None and bool(alive)
    if not down and not stale and not unavailable:
        return {"fleet_alerts": None}
    return {"fleet_alerts": {
        "agents_down": down[:BANNER_NAMES], "agents_down_more": max(0, len(down) - BANNER_NAMES),
        "stale": stale[:BANNER_NAMES], "stale_more": max(0, len(stale) - BANNER_NAMES),
        "telemetry_unavailable": unavailable,
    }}
