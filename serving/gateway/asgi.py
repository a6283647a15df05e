"""``serving.gateway.asgi:application``: what ``manage.py run_gateway`` (and each of its
uvicorn workers) serves. Django is set up once per process, for the ORM only."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aimconsole.settings.local")
django.setup()

from serving.gateway.app import Gateway  # noqa: E402  (needs the apps loaded)

application = Gateway()
