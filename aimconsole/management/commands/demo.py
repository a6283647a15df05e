"""``python manage.py demo`` — set up the embedded demo and run every process (honcho).

Migrates, loads the catalog, creates the demo admin (password generated and printed once),
prints the URL and login, then starts the Procfile's processes in the foreground. Each runs
under ``aimconsole.supervise``, which restarts it with exponential backoff when it crashes or
is killed (honcho alone would stop the whole demo when any one process exits); Ctrl-C stops
everything.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "admin"


class Command(BaseCommand):
    help = "Set up and run the demo console on the embedded defaults."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("AIM_PORT", 8000)))
        parser.add_argument("--setup-only", action="store_true", help="prepare, print the login, do not start")

    def handle(self, *args, **options):
        if not settings.EMBEDDED_REDIS:
            self.stdout.write(self.style.WARNING("REDIS_URL is set: the demo uses that Redis instead of the bundled one."))
        call_command("migrate", interactive=False, verbosity=0)
        call_command("load_catalog", stdout=self.stdout)
        # Two emulated MI300X nodes, read through the real amd-smi backend code path.
        call_command("demo_fleet", nodes=2, gpus=8, stdout=self.stdout)
        password = self._ensure_demo_admin()
        url = f"http://127.0.0.1:{options['port']}/"
        bar = "=" * 64
        self.stdout.write(f"\n{bar}\n AIM Console demo: {url}\n")
        if password:
            self.stdout.write(f" login: {DEMO_USERNAME} / {password}\n"
                              f" (shown once; change it with: .venv/bin/python manage.py changepassword {DEMO_USERNAME})\n")
        else:
            self.stdout.write(f" login: {DEMO_USERNAME} (password printed when it was created; "
                              f"reset with: .venv/bin/python manage.py changepassword {DEMO_USERNAME})\n")
        self.stdout.write(" a process that dies is restarted (with backoff); Ctrl-C stops the demo\n")
        self.stdout.write(f"{bar}\n")
        self.stdout.flush()
        if options["setup_only"]:
            return
        honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
        if honcho is None:
            raise CommandError("honcho is not installed in this environment; run `make install`")
        env = {**os.environ, "AIM_PORT": str(options["port"]), "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        procfile = Path(settings.BASE_DIR) / "Procfile"
        os.execve(honcho, [honcho, "-f", str(procfile), "-d", str(settings.BASE_DIR), "start"], env)

    def _ensure_demo_admin(self) -> str | None:
        """Create the demo admin with a fresh random password; None if it already exists."""
        User = get_user_model()
        if User.objects.filter(username=DEMO_USERNAME).exists():
            return None
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(DEMO_USERNAME, email="", password=password)
        user.groups.add(Group.objects.get(name="admin"))
        return password
