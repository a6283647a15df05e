"""``python manage.py simulate_fleet --nodes N`` — a simulated fleet for benchmarks and for
trying the console at scale (serving.simulation.simulate_fleet does the work; README
"Simulated fleets" documents the options as a stable interface)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from partitions.geometry import GPU_MODELS, ComputeMode, MemoryMode
from partitions.simulation import DEFAULT_TELEMETRY_TTL_S, MAX_GPUS_PER_NODE, MAX_NODES, SimulationError
from serving.simulation import MAX_REPLICAS, remove_simulation, simulate_fleet

DEFAULT_OCCUPANCY = 0.25


class Command(BaseCommand):
    help = "Register N simulated nodes of 8 MI300X GPUs (labelled emulated), with telemetry snapshots and optionally deployments."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--nodes", type=int, help=f"how many nodes (1..{MAX_NODES}); required unless --remove")
        parser.add_argument("--prefix", default="sim-", help="node names are <prefix>0000, ...; a rerun replaces this prefix's nodes (default sim-)")
        parser.add_argument("--gpu-model", default="MI300X", choices=GPU_MODELS)
        parser.add_argument("--gpus", type=int, default=8, help=f"GPUs per node (1..{MAX_GPUS_PER_NODE}; default 8)")
        parser.add_argument("--mode", default="CPX", type=str.upper, choices=[m.value for m in ComputeMode],
                            help="compute mode of every GPU (default CPX: 8 partitions)")
        parser.add_argument("--memory-mode", default="NPS1", type=str.upper, choices=[m.value for m in MemoryMode],
                            help="memory (NPS) mode of every node (default NPS1)")
        parser.add_argument("--deployments", action="store_true",
                            help=f"place running deployments on {DEFAULT_OCCUPANCY:.0%} of the partitions (see --occupancy)")
        parser.add_argument("--occupancy", type=float, default=None,
                            help="share of the partitions the deployments hold, 0..1 (implies --deployments)")
        parser.add_argument("--replicas", type=int, default=1, help=f"replicas per deployment, one partition each (1..{MAX_REPLICAS}; default 1)")
        parser.add_argument("--no-telemetry", action="store_true", help="write no telemetry snapshots (no Redis needed)")
        parser.add_argument("--telemetry-ttl", type=int, default=DEFAULT_TELEMETRY_TTL_S,
                            help=f"seconds the snapshots live, with no agent to renew them (default {DEFAULT_TELEMETRY_TTL_S})")
        parser.add_argument("--remove", action="store_true", help="remove this prefix's simulated nodes, deployments and snapshots")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"]
        try:
            if options["remove"]:
                if options["nodes"] is not None:
                    raise CommandError("--remove takes no --nodes")
                removed = remove_simulation(prefix=prefix, telemetry=not options["no_telemetry"])
                self.stdout.write(f"removed {removed} simulated nodes named {prefix}<n>")
                return
            if options["nodes"] is None:
                raise CommandError("--nodes is required (or --remove)")
            occupancy = options["occupancy"]
            if occupancy is None:
                occupancy = DEFAULT_OCCUPANCY if options["deployments"] else 0.0
            start = time.perf_counter()
            fleet = simulate_fleet(
                nodes=options["nodes"], prefix=prefix, gpu_model=options["gpu_model"], compute_mode=options["mode"],
                memory_mode=options["memory_mode"], gpus_per_node=options["gpus"], occupancy=occupancy,
                replicas=options["replicas"], telemetry=not options["no_telemetry"], telemetry_ttl_s=options["telemetry_ttl"],
            )
        except SimulationError as exc:
            raise CommandError(str(exc)) from None
        layout = fleet.spec.layout
        names = fleet.node_names
        self.stdout.write(
            f"simulated (emulated, no agents): {len(names)} nodes {names[0]}..{names[-1]}, {fleet.gpus} {layout.gpu_model} GPUs "
            f"in {layout.compute_mode}+{layout.memory_mode}, {fleet.partitions} partitions; "
            f"{fleet.deployments} deployments on {fleet.occupied_partitions} partitions; "
            f"{fleet.snapshots} telemetry snapshots; {time.perf_counter() - start:.1f} s"
        )
