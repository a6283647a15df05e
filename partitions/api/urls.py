from __future__ import annotations

from rest_framework.routers import DefaultRouter

from partitions.api.views import GpuSpecViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("gpu-specs", GpuSpecViewSet, basename="gpu-spec")

urlpatterns = router.urls
