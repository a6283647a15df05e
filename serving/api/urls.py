from __future__ import annotations

from rest_framework.routers import DefaultRouter

from serving.api.views import DeploymentViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.include_format_suffixes = False
router.register("deployments", DeploymentViewSet, basename="deployment")

urlpatterns = router.urls
