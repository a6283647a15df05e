"""``python manage.py load_catalog [FILE]`` — load the model catalog (idempotent, atomic)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from models import services
from models.catalog_data import CatalogDataError


class Command(BaseCommand):
    help = "Load models, precisions and profiles from the catalog data file (default: the bundled one)."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="catalog JSON file (default: models/data/catalog.json)")

    def handle(self, *args, **options):
        try:
            result = services.load_catalog(path=options["file"])
        except (CatalogDataError, ValidationError) as exc:
            raise CommandError(f"catalog not loaded, nothing changed: {exc}") from exc
        self.stdout.write(
            f"catalog loaded: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged models; {result.profiles_written} profiles written"
        )
