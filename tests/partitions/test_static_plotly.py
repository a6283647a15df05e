"""Plotly is served compressed and cacheable: a versioned name, gzip, a long immutable max-age
(whitenoise through the finders, no collectstatic)."""

from __future__ import annotations

import gzip

import plotly
import pytest

from aimconsole.staticfinders import NAME, PACKAGE_DATA

pytestmark = pytest.mark.django_db

RAW = (PACKAGE_DATA / "plotly.min.js").stat().st_size


@pytest.fixture
def served(settings):  # type: ignore[no-untyped-def]
    """A fresh WhiteNoise middleware (it indexes the finders' files when built)."""
    from django.test import Client

    return Client()


def test_plotly_url_is_versioned():
    assert NAME == f"plotly/plotly-{plotly.__version__}.min.js"


def test_gzip_and_a_long_immutable_max_age(served):
    response = served.get(f"/static/{NAME}", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    body = b"".join(response.streaming_content)
    assert len(body) < RAW / 3 and RAW > 4_000_000  # 4.75 MB raw, ~1.4 MB gzipped
    assert gzip.decompress(body)[:200] == (PACKAGE_DATA / "plotly.min.js").read_bytes()[:200]
    cache = response["Cache-Control"]
    max_age = int(cache.split("max-age=")[1].split(",")[0])
    assert max_age >= 31_536_000 and "immutable" in cache


def test_without_gzip_the_plain_file(served):
    response = served.get(f"/static/{NAME}")
    assert response.status_code == 200 and "Content-Encoding" not in response
    assert int(response["Content-Length"]) == RAW


def test_the_dashboard_page_uses_the_versioned_url(client, viewer):
    client.force_login(viewer)
    assert f"/static/{NAME}" in client.get("/dashboard/").content.decode()
