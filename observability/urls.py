from __future__ import annotations

from django.urls import path

from observability import views
from observability.deployment_dashboard import deployment_dashboard

app_name = "observability"
urlpatterns = [
    path("overview/", views.overview, name="overview"),
    path("deployments/<int:pk>/dashboard/", deployment_dashboard, name="deployment-dashboard"),
]
