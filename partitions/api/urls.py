from __future__ import annotations

from rest_framework.routers import DefaultRouter

from partitions.api.views import (
    GpuSpecViewSet,
    GPUViewSet,
    NodeViewSet,
    PartitionViewSet,
    ReconfigurationViewSet,
    TelemetryViewSet,
)

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.include_format_suffixes = False  # one URL per resource; JSON by Accept header
router.register("gpu-specs", GpuSpecViewSet, basename="gpu-spec")
router.register("nodes", NodeViewSet, basename="node")
router.register("gpus", GPUViewSet, basename="gpu")
router.register("partitions", PartitionViewSet, basename="partition")
router.register("reconfigurations", ReconfigurationViewSet, basename="reconfiguration")
router.register("telemetry", TelemetryViewSet, basename="telemetry")

urlpatterns = router.urls
