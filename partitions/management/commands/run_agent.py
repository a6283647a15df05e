"""``python manage.py run_agent --node NAME`` — the node agent.

Takes the node's lease first (one agent per node: while another live agent holds it, this one
waits up to ``--lease-wait`` seconds — a crashed agent's lease lapses within one lease period —
then exits with status 1, having touched nothing). Then syncs the node's inventory once, starts
the heartbeat (which renews the lease), telemetry sampler, sweeper and reconciliation loops
(and, with ``--metrics-port`` or ``AIM_AGENT_METRICS_PORT``, the node's own ``/metrics``), and
runs a Celery worker on queue ``node.<NAME>`` with one process, so operations on a node never
overlap. If another agent ever takes the lease over, this one shuts down (exit 1).

The loops run in a process of their own, forked before the Celery worker starts: the prefork
pool forks its worker process from this one, and a fork taken while a loop thread is inside
SQLite (or any C library holding a lock) leaves the child waiting forever on that lock. This
process therefore runs no threads of its own when it forks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
import warnings
from typing import Any

from celery.exceptions import SecurityWarning
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from aimconsole.celery import app
from partitions import workloads
from partitions.agent import Agent, Loop
from partitions.backends.errors import BackendError
from partitions.dispatch import node_queue
from partitions.exporter import REGISTRATION_EVERY_S, start_exporter
from partitions.models import Node
from partitions.services import sync_node
from partitions.services.agent_lease import (
    ENV,
    NodeLease,
    NodeLeaseHeld,
    lease_ttl_s,
    release_node_lease,
    wait_for_node_lease,
)
from partitions.services.reconfiguration import worker_identity

log = logging.getLogger(__name__)


def run_loops(node_name: str, lease: NodeLease, agent_pid: int, metrics_port: int | None = None,
              metrics_addr: str = "") -> None:
    """The loops process: heartbeat (renewing the lease), sampler, sweeper, reconciliation and,
    with ``metrics_port``, the node's own ``/metrics`` (partitions/exporter.py: an HTTP server
    thread, plus a loop advertising it for discovery), until the agent process exits. A lease
    taken over stops the agent (SIGTERM: warm shutdown)."""
    agent = Agent(node_name, lease=lease, on_lease_lost=lambda: os.kill(agent_pid, signal.SIGTERM))
    exporter = None
    if metrics_port is not None:
        try:
            exporter = start_exporter(node_name, port=metrics_port, addr=metrics_addr)
        except OSError as exc:  # the port is taken: the node's work matters more than its metrics
            log.error("agent metrics for %s not served: cannot listen on port %s (%s)", node_name, metrics_port, exc)
    if exporter is not None:
        agent.loops.append(Loop(f"exporter-{node_name}", REGISTRATION_EVERY_S, exporter.register))
    agent.start()
    try:
        while os.getppid() == agent_pid:  # the agent died without stopping us (SIGKILL): stop renewing
            time.sleep(0.5)
    finally:
        agent.stop()
        if exporter is not None:
            exporter.stop()


def quiet_root_warning() -> None:
    """Silence Celery's "running the worker with superuser privileges" SecurityWarning, and only
    that one. On a real node the agent runs as root because amd-smi needs it to read and set
    partitions; the warning would be printed at every start, by every agent, and says nothing
    an operator can act on. The worker only accepts JSON, and Celery still refuses to run as
    root with pickle (a SecurityError, not this warning), which stays as it is."""
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges",
                            category=SecurityWarning)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


class Command(BaseCommand):
    help = "Run the node agent for one node (Celery worker + telemetry sampler)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", required=True)
        parser.add_argument("--loglevel", default="INFO")
        parser.add_argument("--stop-workloads-on-exit", action="store_true",
                            help="stop the node's workloads (serving processes) when the agent stops (the demo: Ctrl-C "
                                 "stops everything); by default they keep serving and the next agent adopts them")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="serve the node's own /metrics on this port (0: any free port, advertised for discovery); "
                                 "default: the AIM_AGENT_METRICS_PORT setting, off when unset")
        parser.add_argument("--metrics-addr", default=None,
                            help="address the node's /metrics binds (default: the AIM_AGENT_METRICS_ADDR setting, 0.0.0.0)")
        parser.add_argument("--lease-wait", type=float, default=None,
                            help="Seconds to wait for another agent's lease to lapse (default: one lease period and a bit)")

    def handle(self, *args: Any, **options: Any) -> None:
        quiet_root_warning()
        if not options["stop_workloads_on_exit"]:
            self.run_agent(**options)
            return
        # SIGTERM at any point (even while starting, before Celery installs its handlers) ends
        # this process through the finally below, which stops the node's workloads.
        me = os.getpid()
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self.run_agent(**options)
        finally:
            if os.getpid() == me:  # not in a forked child (the loops process, a pool worker)
                node = Node.objects.filter(name=options["node"]).first()
                if node is not None:
                    workloads.shut_down(node=node, reason="the agent stopped (--stop-workloads-on-exit)")

    def run_agent(self, **options: Any) -> None:
        name = options["node"]
        node = Node.objects.filter(name=name).first()
        if node is None:
            raise CommandError(f"no node {name!r}: register it first (sync_node {name} --create, or demo_fleet)")
        metrics_port = options["metrics_port"] if options["metrics_port"] is not None else settings.AGENT_METRICS_PORT
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise CommandError(f"--metrics-port must be a port 0-65535, not {metrics_port}")
        wait = options["lease_wait"] if options["lease_wait"] is not None else lease_ttl_s() * 1.5
        try:
            lease = wait_for_node_lease(node=node, holder=worker_identity(), wait_s=wait)
        except NodeLeaseHeld as exc:
            raise CommandError(f"refusing to start: {exc}") from exc
        self.stdout.write(f"holding node {name} (lease token {lease.token})")
        self.stdout.flush()
        # Worker processes fork from this one and check the lease before every hardware call.
        os.environ[ENV] = lease.to_environment()
        loops = None
        try:
            try:
                sync_node(node=node)
            except BackendError as exc:
                self.stderr.write(f"initial inventory sync failed (continuing): {exc}")
            connections.close_all()  # neither child may share this process's database connection
            loops = multiprocessing.get_context("fork").Process(
                target=run_loops, args=(name, lease, os.getpid(), metrics_port, options["metrics_addr"] or ""),
                name=f"agent-loops-{name}", daemon=True)
            loops.start()
            app.worker_main([
                "worker", "--queues", node_queue(name), "--concurrency", "1", "--pool", "prefork",
                "--hostname", f"agent-{name}@%h", "--loglevel", options["loglevel"],
                "--without-gossip", "--without-mingle", "--prefetch-multiplier", "1",
            ])
        finally:
            if loops is not None and loops.is_alive():
                loops.terminate()
                loops.join(10)
            # Lost means taken over (a new token), not merely lapsed while shutting down.
            lost = not Node.objects.filter(pk=lease.node_id, agent_lease_holder=lease.holder,
                                           agent_lease_token=lease.token).exists()
            release_node_lease(lease)  # a no-op when another agent holds it now
        if lost:
            raise CommandError(f"stopped: another agent took node {name} over")
