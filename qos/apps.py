from __future__ import annotations

from django.apps import AppConfig


class QosConfig(AppConfig):
    name = "qos"
    verbose_name = "Quality of service"
