"""One agent per node: a lease row on the node, with a fencing token.

Two agents for one node each ran operations on its hardware: a ``set`` hit the wrong GPU
(logical ids renumber after every change), one agent's rollback reverted the other's
succeeded change, and an innocent GPU was marked unhealthy. So:

- ``manage.py run_agent`` takes the node's lease before it touches anything
  (``acquire_node_lease``) and refuses to run while another live agent holds it;
- the agent's heartbeat renews it (``renew_node_lease``); a lapsed lease can be taken over,
  and every take-over increments ``agent_lease_token``, so a stale holder can never renew or
  pass a check again (fencing);
- every hardware call of an operation first checks that its agent still holds the lease
  (``holds_node_lease``; partitions/reconfigure.py).

Worker processes of the agent (Celery prefork children) learn the lease from the environment
(``NodeLease.from_environment``), which ``run_agent`` sets before the worker forks them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from partitions.models import Node

ENV = "AIM_AGENT_NODE_LEASE"


class NodeLeaseHeld(Exception):
    """Another live agent holds the node; ``holder`` names it."""

    def __init__(self, node: str, holder: str, expires_at: Any) -> None:
        self.node = node
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(
            f"node {node} is held by agent {holder or '?'} (lease renewed by its heartbeat, expires "
            f"{expires_at:%Y-%m-%d %H:%M:%S} UTC unless renewed): stop that agent first; one agent per node"
            if expires_at else f"node {node} is held by agent {holder or '?'}"
        )


@dataclass(frozen=True)
class NodeLease:
    """The right of one agent process to touch one node's hardware, as of ``token``."""

    node_id: int
    node_name: str
    holder: str
    token: int

    def to_environment(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls, node_name: str | None = None) -> NodeLease | None:
        """The lease the agent running this process took (None outside an agent, or for
        another node)."""
        raw = os.environ.get(ENV, "")
        if not raw:
            return None
        try:
            lease = cls(**json.loads(raw))
        except (TypeError, ValueError):
            return None
        if node_name is not None and lease.node_name != node_name:
            return None
        return lease


def lease_ttl_s() -> float:
    """How long a lease lasts without renewal: ``AGENT_LEASE_S``, default 3 heartbeats."""
    configured = getattr(settings, "AGENT_LEASE_S", None)
    return float(configured) if configured else 3 * float(settings.AGENT_HEARTBEAT_S)


def acquire_node_lease(*, node: Node, holder: str, ttl_s: float | None = None) -> NodeLease:
    """Take ``node`` for ``holder`` if nobody holds it (or the holder's lease lapsed, or it is
    ``holder`` itself). One conditional UPDATE, so two agents starting together cannot both
    win. Raises NodeLeaseHeld otherwise."""
    now = timezone.now()
    ttl = lease_ttl_s() if ttl_s is None else ttl_s
    free = (Q(agent_lease_holder="") | Q(agent_lease_expires_at__isnull=True) | Q(agent_lease_expires_at__lte=now)
            | Q(agent_lease_holder=holder))
    taken = Node.objects.filter(pk=node.pk).filter(free).update(
        agent_lease_holder=holder, agent_lease_token=F("agent_lease_token") + 1,
        agent_lease_expires_at=now + timedelta(seconds=ttl),
    )
    row = Node.objects.values("agent_lease_holder", "agent_lease_token", "agent_lease_expires_at").get(pk=node.pk)
    if not taken:
        raise NodeLeaseHeld(node.name, row["agent_lease_holder"], row["agent_lease_expires_at"])
    return NodeLease(node_id=node.pk, node_name=node.name, holder=holder, token=row["agent_lease_token"])


def wait_for_node_lease(*, node: Node, holder: str, wait_s: float, poll_s: float = 0.5) -> NodeLease:
    """``acquire_node_lease``, retried for ``wait_s`` seconds: a crashed agent's lease lapses
    within one TTL, a live agent keeps renewing it (then NodeLeaseHeld is raised)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return acquire_node_lease(node=node, holder=holder)
        except NodeLeaseHeld:
            if time.monotonic() >= deadline:
                raise
            time.sleep(poll_s)


def renew_node_lease(lease: NodeLease, *, ttl_s: float | None = None, heartbeat: bool = False) -> bool:
    """Extend the lease (with ``heartbeat``, also record the agent's heartbeat); False when
    another agent took it over."""
    now = timezone.now()
    ttl = lease_ttl_s() if ttl_s is None else ttl_s
    values: dict[str, Any] = {"agent_lease_expires_at": now + timedelta(seconds=ttl)}
    if heartbeat:
        values["agent_heartbeat_at"] = now
    return Node.objects.filter(pk=lease.node_id, agent_lease_holder=lease.holder, agent_lease_token=lease.token).update(
        **values) == 1


def holds_node_lease(lease: NodeLease) -> bool:
    """True while ``lease`` is the node's current, unexpired lease."""
    return Node.objects.filter(pk=lease.node_id, agent_lease_holder=lease.holder, agent_lease_token=lease.token,
                               agent_lease_expires_at__gt=timezone.now()).exists()


def release_node_lease(lease: NodeLease) -> None:
    """Give the node up (the token stays, so it only ever goes up)."""
    Node.objects.filter(pk=lease.node_id, agent_lease_holder=lease.holder, agent_lease_token=lease.token).update(
        agent_lease_holder="", agent_lease_expires_at=None,
    )


__all__ = [
    "ENV", "NodeLease", "NodeLeaseHeld", "acquire_node_lease", "holds_node_lease", "lease_ttl_s",
    "release_node_lease", "renew_node_lease", "wait_for_node_lease",
]
