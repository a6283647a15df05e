"""WebSocket routes. Each app contributes its own ``websocket_urlpatterns``."""

from __future__ import annotations

from partitions.routing import websocket_urlpatterns as partitions_ws
from serving.routing import websocket_urlpatterns as serving_ws

websocket_urlpatterns = [*partitions_ws, *serving_ws]
