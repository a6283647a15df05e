from __future__ import annotations

from django.urls import path

from partitions.consumers import OperationConsumer, TelemetryConsumer

websocket_urlpatterns = [
    path("ws/operations/<int:pk>/", OperationConsumer.as_asgi()),
    path("ws/telemetry/", TelemetryConsumer.as_asgi()),
]
