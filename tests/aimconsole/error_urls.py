"""The console's URLs plus a page that raises, for the 500 page test."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from aimconsole.urls import handler403, handler404, handler500
from aimconsole.urls import urlpatterns as console_urlpatterns

__all__ = ["handler403", "handler404", "handler500", "urlpatterns"]


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom: a bug in a view")


def fine(request: HttpRequest) -> HttpResponse:
    return HttpResponse("fine")


urlpatterns = [path("broken/", broken), path("fine/", fine), path("api/v1/broken/", broken), *console_urlpatterns]
