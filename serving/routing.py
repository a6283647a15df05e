from __future__ import annotations

from django.urls import path

from serving.consumers import DeploymentConsumer

websocket_urlpatterns = [
    path("ws/deployments/<int:pk>/", DeploymentConsumer.as_asgi()),
]
