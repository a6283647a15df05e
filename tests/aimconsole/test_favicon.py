"""Browsers ask every page's origin for /favicon.ico (Django admin's pages name no icon): the
console answers with its icon instead of a 404 that Chromium logs as a console error."""

import pytest


@pytest.mark.django_db
def test_favicon_ico_redirects_to_the_console_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response["Location"])
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(icon.streaming_content if icon.streaming else [icon.content])


@pytest.mark.django_db
def test_console_pages_name_the_same_icon(client, viewer):
    client.force_login(viewer)
    html = client.get("/overview/").content.decode()
    assert 'rel="icon"' in html and "aimconsole/favicon" in html and 'href="data:,"' not in html
