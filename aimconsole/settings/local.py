"""Developer / demo settings: the embedded defaults. DEBUG only when asked for
(``DJANGO_DEBUG=1``): the demo must not show tracebacks and every URL pattern."""

from __future__ import annotations

from .base import *  # noqa: F401,F403
from .base import BASE_DIR, env

DEBUG = env.bool("DJANGO_DEBUG", default=False)

# The demo's emulated nodes sample telemetry through the emulator's (emulated) amdsmi library
# face in-process, not one amd-smi-emulator process per node per second (README "Hardware layer").
AMD_SMI_EMULATOR_LIBRARY = env.str("AIM_AMD_SMI_EMULATOR_LIBRARY", default=str(BASE_DIR / "amdsmi_emulator" / "pylib"))
