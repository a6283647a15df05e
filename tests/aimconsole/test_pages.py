"""Pages: login required everywhere, the catalog page and its fit matrix."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/catalog/", "/catalog/1/", "/admin/"])
def test_pages_redirect_anonymous_users_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/") or response["Location"].startswith("/admin/login/")


def test_login_page_is_public_and_signs_in(client, viewer, catalog):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "vera", "password": "pw-vera"})
    assert response.status_code == 302
    page = client.get(response["Location"], follow=True)
    assert page.status_code == 200
    assert b"<h1>Fleet</h1>" in page.content


def test_wrong_password_is_refused(client, viewer):
    response = client.post("/accounts/login/", {"username": "vera", "password": "wrong"})
    assert response.status_code == 200
    assert b"didn't match" in response.content
    assert "_auth_user_id" not in client.session


def test_catalog_page_shows_every_model_and_the_fit_matrix(client, viewer, catalog):
    client.force_login(viewer)
    response = client.get(reverse("catalog:model-list"))
    html = response.content.decode()
    rows = re.findall(r'<a href="/catalog/\d+/">([^<]+)</a>', html)
    assert len(rows) == 37
    assert "deepseek-ai/DeepSeek-V3" in rows
    # Column per precision, a cell per (model, precision).
    assert html.count('class="cell ') == 37 * 4
    assert "viewer" in html  # the signed-in role in the navigation


def test_catalog_search_and_gpu_choice(client, viewer, catalog):
    client.force_login(viewer)
    html = client.get(reverse("catalog:model-list"), {"q": "qwen3", "gpu": "MI355X"}).content.decode()
    rows = re.findall(r'<a href="/catalog/\d+/">([^<]+)</a>', html)
    assert rows and all("qwen3" in row.lower() for row in rows)
    assert "288 GiB" in html
    assert "nominal" in html  # MI355X partition memory is an estimate and says so


def test_catalog_page_marks_multi_gpu_models(client, viewer, catalog):
    client.force_login(viewer)
    html = client.get(reverse("catalog:model-list"), {"q": "DeepSeek-V3-0324"}).content.decode()
    assert re.search(r'class="cell fit-multi".*?\d+× GPU', html, re.S)


def test_model_detail_page(client, viewer, catalog):
    from models.models import InferenceModel

    client.force_login(viewer)
    model = InferenceModel.objects.get(hf_id="deepseek-ai/DeepSeek-V3")
    html = client.get(reverse("catalog:model-detail", args=[model.pk])).content.decode()
    assert "Multi-head latent" in html
    assert "rank 512 + RoPE 64" in html
    assert html.count("<tr>") >= 1 + 4 * 6
