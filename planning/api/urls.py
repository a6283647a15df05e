from __future__ import annotations

from rest_framework.routers import DefaultRouter

from planning.api.views import PlanViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.include_format_suffixes = False
router.register("plans", PlanViewSet, basename="plan")

urlpatterns = router.urls
