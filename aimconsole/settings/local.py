"""Developer / demo settings: the embedded defaults plus DEBUG unless told otherwise."""

from __future__ import annotations

from .base import *  # noqa: F401,F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
