"""Every list under /api/v1/ is paginated with a bounded page: found from the URLconf (a new
list is covered without being named here), each answers ``count``/``results`` at the largest
page and refuses a larger one with a 400 naming ``limit``."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from aimconsole.api import MAX_PAGE_SIZE

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def _list_routes(patterns, prefix: str = "") -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            out += _list_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and (pattern.name or "").endswith("-list") and "<" not in route and "(?P" not in route:
            out.append("/" + route.replace("^", "").replace("$", "").replace("\\", ""))
    return out


LISTS = sorted(r for r in _list_routes(get_resolver().url_patterns) if r.startswith("/api/v1/"))


def test_the_lists_are_found():
    assert {"/api/v1/nodes/", "/api/v1/gpus/", "/api/v1/partitions/", "/api/v1/telemetry/", "/api/v1/deployments/",
            "/api/v1/plans/", "/api/v1/audit-events/", "/api/v1/gpu-specs/"} <= set(LISTS)


@pytest.mark.parametrize("url", LISTS)
def test_every_list_has_a_bounded_page(api_client_for, admin_user, redis_url, url):
    client = api_client_for(admin_user)
    largest = client.get(url, {"limit": MAX_PAGE_SIZE})
    assert largest.status_code == 200, (url, largest.content[:300])
    assert {"count", "next", "previous", "results"} <= set(largest.json())
    too_large = client.get(url, {"limit": MAX_PAGE_SIZE + 1})
    assert too_large.status_code == 400, (url, too_large.status_code)
    assert "limit" in too_large.json()["detail"]
