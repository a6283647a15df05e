"""``python manage.py demo`` — set up the embedded demo and run every process (honcho).

Migrates, loads the catalog, creates the demo admin (password generated and printed once),
deploys one small model (served by the engine emulator on the emulated nodes), makes an
inference token (var/demo-inference-token), prints the console's and the gateway's URLs, the
login and a streaming curl, then starts the Procfile's processes in the foreground (the web
process is ``run_web`` with ``AIM_WEB_WORKERS`` uvicorn workers: by default one per core, at
most 4). Each runs under ``aimconsole.supervise``, which restarts it with exponential backoff
when it crashes or is killed (honcho alone would stop the whole demo when any one process
exits); Ctrl-C stops everything.
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
DEMO_DEPLOYMENT = "demo-chat"
DEMO_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEMO_TOKEN_NAME = "demo-gateway"


class Command(BaseCommand):
    help = "Set up and run the demo console on the embedded defaults."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("AIM_PORT", 8000)))
        parser.add_argument("--setup-only", action="store_true", help="prepare, print the login, do not start")
        parser.add_argument("--no-traffic", action="store_true",
                            help="do not start the gentle traffic generator (AIM_DEMO_TRAFFIC=0 does the same)")

    def handle(self, *args, **options):
        if not settings.EMBEDDED_REDIS:
            self.stdout.write(self.style.WARNING("REDIS_URL is set: the demo uses that Redis instead of the bundled one."))
        call_command("migrate", interactive=False, verbosity=0)
        call_command("load_catalog", stdout=self.stdout)
        # Two emulated MI300X nodes, read through the real amd-smi backend code path.
        call_command("demo_fleet", nodes=2, gpus=8, stdout=self.stdout)
        password = self._ensure_demo_admin()
        deployment = self._ensure_demo_deployment()
        key = self._demo_inference_token()
        url = f"http://127.0.0.1:{options['port']}/"
        gateway = f"http://127.0.0.1:{settings.GATEWAY_PORT}"
        bar = "=" * 64
        self.stdout.write(f"\n{bar}\n AIM Console demo: {url}\n")
        if password:
            self.stdout.write(f" login: {DEMO_USERNAME} / {password}\n"
                              f" (shown once; change it with: .venv/bin/python manage.py changepassword {DEMO_USERNAME})\n")
        else:
            self.stdout.write(f" login: {DEMO_USERNAME} (password printed when it was created; "
                              f"reset with: .venv/bin/python manage.py changepassword {DEMO_USERNAME})\n")
        self.stdout.write(f" inference gateway (OpenAI API): {gateway}/v1  -- serving {deployment} on emulated nodes\n"
                          f"   (the engine emulator answers: its text and metrics say emulated)\n"
                          f" inference token: {key}  (also in {self._token_file()})\n"
                          f"   curl -N {gateway}/v1/chat/completions -H 'Authorization: Bearer {key}' \\\n"
                          f"     -H 'Content-Type: application/json' -d '{{\"model\": \"{deployment}\", \"stream\": true, "
                          f"\"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n")
        self.stdout.write(" a process that dies is restarted (with backoff); Ctrl-C stops the demo\n")
        self.stdout.write(f"{bar}\n")
        self.stdout.flush()
        if options["setup_only"]:
            return
        honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
        if honcho is None:
            raise CommandError("honcho is not installed in this environment; run `make install`")
        env = {**os.environ, "AIM_PORT": str(options["port"]), "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        if options["no_traffic"]:
            env["AIM_DEMO_TRAFFIC"] = "0"
        procfile = Path(settings.BASE_DIR) / "Procfile"
        os.execve(honcho, [honcho, "-f", str(procfile), "-d", str(settings.BASE_DIR), "start"], env)

    def _ensure_demo_deployment(self) -> str:
        """One small model with two replicas, served by the engine emulator on the demo's nodes."""
        from models.models import ModelProfile
        from planning.services import DemandSpec
        from serving.models import Deployment
        from serving.services import PlacementConflict, create_deployment

        if Deployment.objects.active().filter(name=DEMO_DEPLOYMENT).exists():
            return DEMO_DEPLOYMENT
        profile = (ModelProfile.objects.with_related().filter(model__hf_id=DEMO_MODEL, gpu_model="MI300X")
                   .order_by("precision__sort_order", "context_tokens").first())
        if profile is None:
            raise CommandError(f"the catalog has no MI300X profile of {DEMO_MODEL}")
        try:
            create_deployment(spec=DemandSpec(name=DEMO_DEPLOYMENT, profile=profile, replicas=2, spread=True))
        except PlacementConflict as exc:
            self.stdout.write(self.style.WARNING(f"the demo deployment was not placed: {exc}"))
        return DEMO_DEPLOYMENT

    def _token_file(self) -> Path:
        return Path(settings.VAR_DIR) / "demo-inference-token"

    def _demo_inference_token(self) -> str:
        """A fresh inference-scoped token of the demo admin (the previous demo token is revoked);
        the traffic generator reads it from var/demo-inference-token (mode 0600)."""
        from aimconsole.models import ApiToken, TokenScope
        from aimconsole.services import create_token, revoke_token

        user = get_user_model().objects.get(username=DEMO_USERNAME)
        for old in ApiToken.objects.usable().filter(user=user, name=DEMO_TOKEN_NAME):
            revoke_token(token=old)
        _, key = create_token(user=user, name=DEMO_TOKEN_NAME, scopes=[TokenScope.INFERENCE])
        path = self._token_file()
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(key + "\n")
        return key

    def _ensure_demo_admin(self) -> str | None:
        """Create the demo admin with a fresh random password; None if it already exists."""
        User = get_user_model()
        if User.objects.filter(username=DEMO_USERNAME).exists():
            return None
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(DEMO_USERNAME, email="", password=password)
        user.groups.add(Group.objects.get(name="admin"))
        return password
