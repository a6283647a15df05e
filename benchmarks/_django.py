"""Set up Django on a throw-away SQLite database for a benchmark script."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def setup() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("AIM_VAR_DIR", tempfile.mkdtemp(prefix="aim-bench-"))
    os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "aimconsole.settings.local"
    os.environ["DJANGO_DEBUG"] = "False"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
