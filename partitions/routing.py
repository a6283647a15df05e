from __future__ import annotations

from django.urls import path

from partitions.consumers import FleetConsumer, OperationConsumer, TelemetryConsumer, UserConsumer
from partitions.dashboard_consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/operations/<int:pk>/", OperationConsumer.as_asgi()),
    path("ws/telemetry/", TelemetryConsumer.as_asgi()),
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/fleet/", FleetConsumer.as_asgi()),
    path("ws/me/", UserConsumer.as_asgi()),
]
