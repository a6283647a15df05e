from __future__ import annotations

from django.urls import path

from observability import views
from observability.deployment_dashboard import deployment_dashboard
from observability.metrics import agent_targets_view

app_name = "observability"
urlpatterns = [
    path("overview/", views.overview, name="overview"),
    path("metrics/agents", agent_targets_view, name="metrics-agents"),
    path("deployments/<int:pk>/dashboard/", deployment_dashboard, name="deployment-dashboard"),
]
