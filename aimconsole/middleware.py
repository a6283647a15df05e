"""Login required on every page.

The API (``/api/``) is left to DRF, which authenticates sessions and tokens itself and answers
401/403 instead of redirecting to the login page. Views that must stay public
(``/healthz``, ``/readyz``, login) are marked with ``login_not_required``.
"""

from __future__ import annotations

from django.contrib.auth.middleware import LoginRequiredMiddleware as _DjangoLoginRequired


class LoginRequiredMiddleware(_DjangoLoginRequired):
    def process_view(self, request, view_func, view_args, view_kwargs):  # type: ignore[no-untyped-def]
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
