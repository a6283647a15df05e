from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "models"
    label = "catalog"
    verbose_name = "Model catalog"
