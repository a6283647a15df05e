"""The Celery app. Broker = REDIS_URL (see settings); configuration from CELERY_* settings."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aimconsole.settings.local")

app = Celery("aimconsole")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
