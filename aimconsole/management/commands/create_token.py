"""``python manage.py create_token USERNAME [--name NAME] [--scope api|metrics|inference ...]`` —
print a new API token once. ``--scope metrics`` makes the token Prometheus sends to /metrics;
``--scope inference`` the key applications send to the inference gateway
(``Authorization: Bearer <key>`` on /v1/chat/completions, /v1/completions, /v1/models)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from aimconsole.models import TokenScope
from aimconsole.services import create_token


class Command(BaseCommand):
    help = "Create an API token for a user and print it (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--scope", action="append", dest="scopes", choices=TokenScope.values,
                            help="What the token is for (repeat for several): api (default: the REST API), "
                                 "metrics (Prometheus /metrics), inference (the inference gateway's /v1/).")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        try:
            _, key = create_token(user=user, name=options["name"][:100], scopes=options["scopes"] or [TokenScope.API])
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(key)
