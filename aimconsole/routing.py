"""WebSocket routes. Each app contributes its own ``websocket_urlpatterns``."""

from __future__ import annotations

websocket_urlpatterns: list = []
