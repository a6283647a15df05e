from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from aimconsole.api_views import ApiRootView, AuditEventViewSet, TokenViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False  # one root for every app's router: ApiRootView
router.include_format_suffixes = False  # one URL per resource; JSON by Accept header
router.register("tokens", TokenViewSet, basename="token")
router.register("audit-events", AuditEventViewSet, basename="audit-event")

urlpatterns = [path("", ApiRootView.as_view(), name="api-root"), *router.urls]
