"""The live utilization dashboard; the root URLconf includes this at ``dashboard/``."""

from __future__ import annotations

from django.urls import path

from partitions.dashboard import dashboard

app_name = "dashboard"
urlpatterns = [
    path("", dashboard, name="dashboard"),
]
