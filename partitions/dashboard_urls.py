"""The utilization dashboard; the root URLconf includes this at ``dashboard/``."""

from __future__ import annotations

from django.urls import path

from partitions.dashboard import dashboard, history_view

app_name = "dashboard"
urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("history/", history_view, name="history"),
]
