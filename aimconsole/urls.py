"""Root URLs: pages, the v1 API, OpenAPI schema and docs, admin, health."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from aimconsole import audit_views, errors, health, preferences_views, search
from aimconsole.login import LoginView
from observability.metrics import metrics_view

api_v1 = [
    path("", include("models.api.urls")),
    path("", include("partitions.api.urls")),
    path("", include("planning.api.urls")),
    path("", include("serving.api.urls")),
    path("", include("aimconsole.api_urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="partitions:fleet", permanent=False), name="home"),
    # Browsers ask for /favicon.ico on pages that name no icon (Django admin's).
    path("favicon.ico", errors.favicon, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("catalog/", include("models.urls")),
    path("", include("partitions.urls")),
    path("", include("planning.urls")),
    path("", include("serving.urls")),
    path("dashboard/", include("partitions.dashboard_urls")),
    path("", include("observability.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's init script as a file: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("audit/", audit_views.audit_log, name="audit-log"),
    path("search/", search.search, name="search"),
    path("preferences/", preferences_views.preferences_page, name="preferences"),
    path("preferences/theme/", preferences_views.theme_toggle, name="preferences-theme"),
]

admin.site.site_header = "AIM Console administration"
admin.site.site_title = "AIM Console"

handler403 = "aimconsole.errors.permission_denied"
handler404 = "aimconsole.errors.page_not_found"
handler500 = "aimconsole.errors.server_error"
