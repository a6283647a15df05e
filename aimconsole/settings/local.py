"""Developer / demo settings: the embedded defaults. DEBUG only when asked for
(``DJANGO_DEBUG=1``): the demo must not show tracebacks and every URL pattern."""

from __future__ import annotations

from .base import *  # noqa: F401,F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=False)
