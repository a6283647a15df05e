from __future__ import annotations

from rest_framework.routers import DefaultRouter

from partitions.api.views import GPUViewSet, GpuSpecViewSet, NodeViewSet, PartitionViewSet, ReconfigurationViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("gpu-specs", GpuSpecViewSet, basename="gpu-spec")
router.register("nodes", NodeViewSet, basename="node")
router.register("gpus", GPUViewSet, basename="gpu")
router.register("partitions", PartitionViewSet, basename="partition")
router.register("reconfigurations", ReconfigurationViewSet, basename="reconfiguration")

urlpatterns = router.urls
