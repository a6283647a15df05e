from __future__ import annotations

from django.apps import AppConfig


class PartitionsConfig(AppConfig):
    name = "partitions"
    verbose_name = "GPU partitions"

    def ready(self) -> None:
        from partitions import drain
        from partitions.services.deployments import DeploymentWorkloads

        drain.register(DeploymentWorkloads())
