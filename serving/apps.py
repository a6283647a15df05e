from __future__ import annotations

from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Model serving"

    def ready(self) -> None:
        # Serving implements the ports that the lower layers define: the workloads a drain
        # stops and the fleet page shows (partitions), and the replicas that placement sees and
        # that applying a plan moves (planning), ...
        from models import dependents
        from partitions import workloads
        from planning import occupancy
        from serving.services import DeploymentWorkloads

        provider = DeploymentWorkloads()
        workloads.register(provider)
        occupancy.register(provider)
        # ... and the catalog's: what runs with a profile whose sizing an admin changed.
        dependents.register(provider)
