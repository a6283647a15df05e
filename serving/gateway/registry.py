"""What the gateway routes to: the routable replicas read from the database (``load_table``,
the only ORM code of the hot path's data), and the per-process balancer that picks one.

The table is an immutable snapshot swapped as a whole on each refresh, so a request reads
one consistent view without locks (one event loop per process)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Upstream:
    """One routable replica copy (a ``serving.Replica`` row)."""

    key: str                 # Replica.key: unique, stable across restarts of the copy
    deployment: str          # deployment name
    model_id: str            # catalog id (the metrics' model label)
    base_url: str            # endpoint without a trailing "/" or "/v1"
    served_model: str        # the name the upstream answers to ("" = the requested one)
    emulated: bool           # its node is emulated (metrics label)
    version: float           # Replica.updated_at (epoch s): a newer one ends an ejection


@dataclass(frozen=True)
class RouteTable:
    """Routable replicas by deployment name and by catalog id, plus the names of active
    deployments (a model that is known but has no ready replica is a 503, not a 404)."""

    by_name: dict[str, tuple[Upstream, ...]] = field(default_factory=dict)
    by_model: dict[str, tuple[Upstream, ...]] = field(default_factory=dict)
    known: frozenset[str] = frozenset()
    loaded_at: float = 0.0   # epoch seconds of the database read

    def lookup(self, model: str) -> tuple[Upstream, ...] | None:
        """The replicas for ``model`` (a deployment name first, else a catalog id); () when the
        model is known but has none ready; None when unknown."""
        found = self.by_name.get(model)
        if found is None:
            found = self.by_model.get(model)
        if found is None:
            return () if model in self.known else None
        return found

    @property
    def upstreams(self) -> list[Upstream]:
        return [u for group in self.by_name.values() for u in group]


def base_url(endpoint: str) -> str:
    """``http://h:p/v1/`` and ``http://h:p`` both become ``http://h:p``."""
    url = endpoint.strip().rstrip("/")
    return url[:-3].rstrip("/") if url.endswith("/v1") else url


def build_table(rows: Iterable[tuple], active: Iterable[tuple[str, str]], loaded_at: float) -> RouteTable:
    """A table from ``(key, deployment name, catalog id, endpoint, served_model, emulated,
    updated_at epoch)`` rows and ``(name, catalog id)`` of active deployments."""
    by_name: dict[str, list[Upstream]] = {}
    by_model: dict[str, list[Upstream]] = {}
    for key, name, model_id, endpoint, served, emulated, version in rows:
        u = Upstream(key=key, deployment=name, model_id=model_id, base_url=base_url(endpoint), served_model=served or "",
                     emulated=bool(emulated), version=float(version))
        by_name.setdefault(name, []).append(u)
        by_model.setdefault(model_id, []).append(u)
    known: set[str] = set()
    for name, model_id in active:
        known.update((name, model_id))
    return RouteTable(by_name={k: tuple(v) for k, v in by_name.items()}, by_model={k: tuple(v) for k, v in by_model.items()},
                      known=frozenset(known), loaded_at=loaded_at)


def load_table() -> RouteTable:
    """Two queries: routable replicas (with deployment, catalog id and node) and the active
    deployments' names. Runs in the gateway's database threads, never on the event loop."""
    from serving.models import Deployment, Replica

    now = time.time()
    rows = [
        (key, name, hf_id, endpoint, served, emulated, updated.timestamp())
        for key, name, hf_id, endpoint, served, emulated, updated in Replica.objects.routable().order_by("key").values_list(
            "key", "deployment__name", "deployment__profile__model__hf_id", "endpoint", "served_model", "node__emulated",
            "updated_at")
    ]
    active = list(Deployment.objects.active().order_by().values_list("name", "profile__model__hf_id"))
    return build_table(rows, active, now)


class Balancer:
    """Least outstanding requests first, over this process's counts plus the other gateway
    processes' (read from Redis every ``share_interval_s``); ties broken at random.

    Ejection: a replica that refused a connection or died mid-stream is taken out at once and
    stays out until the registry shows a newer state of it (its row's ``updated_at`` is later
    than the version we routed to: the agent saw it restart and become ready again) or a
    background health probe (``GET /health``) answers 200."""

    def __init__(self) -> None:
        self.local: dict[str, int] = {}
        self.remote: dict[str, int] = {}
        self.ejected: dict[str, float] = {}   # key -> version at ejection

    def load(self, u: Upstream) -> int:
        return self.local.get(u.key, 0) + self.remote.get(u.key, 0)

    def usable(self, u: Upstream) -> bool:
        version = self.ejected.get(u.key)
        return version is None or u.version > version

    def pick(self, candidates: Iterable[Upstream], exclude: set[str]) -> Upstream | None:
        best: list[Upstream] = []
        best_load = 0
        for u in candidates:
            if u.key in exclude or not self.usable(u):
                continue
            load = self.load(u)
            if not best or load < best_load:
                best, best_load = [u], load
            elif load == best_load:
                best.append(u)
        return random.choice(best) if best else None

    def acquire(self, u: Upstream) -> None:
        self.local[u.key] = self.local.get(u.key, 0) + 1

    def release(self, u: Upstream) -> None:
        n = self.local.get(u.key, 0) - 1
        if n > 0:
            self.local[u.key] = n
        else:
            self.local.pop(u.key, None)

    def eject(self, u: Upstream) -> None:
        self.ejected[u.key] = max(u.version, self.ejected.get(u.key, u.version))

    def readmit(self, key: str) -> None:
        self.ejected.pop(key, None)

    def forget_missing(self, table: RouteTable) -> None:
        """Drop ejections of replicas the table no longer has, or whose row moved on."""
        current = {u.key: u for u in table.upstreams}
        for key, version in list(self.ejected.items()):
            u = current.get(key)
            if u is None or u.version > version:
                del self.ejected[key]
