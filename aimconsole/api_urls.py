from __future__ import annotations

from rest_framework.routers import DefaultRouter

from aimconsole.api_views import AuditEventViewSet, TokenViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.include_format_suffixes = False  # one URL per resource; JSON by Accept header
router.register("tokens", TokenViewSet, basename="token")
router.register("audit-events", AuditEventViewSet, basename="audit-event")

urlpatterns = router.urls
