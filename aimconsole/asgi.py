"""ASGI entry point: HTTP through Django (bodies bounded, aimconsole/limits.py), WebSockets
through Channels (auth; Origin checked with its port, aimconsole/wsorigin.py)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aimconsole.settings.local")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from aimconsole.limits import BodySizeLimitASGI, install_daphne_limit  # noqa: E402
from aimconsole.routing import websocket_urlpatterns  # noqa: E402
from aimconsole.wsorigin import SameOriginValidator  # noqa: E402

install_daphne_limit()  # daphne reads whole bodies before calling us: refuse oversized ones first

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimitASGI(django_asgi_app),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
