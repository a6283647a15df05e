"""The deployment pages: the form shares the API's validation, validates before any write, and
places without holding the database's write lock (issue 11, 3b)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import connection
from django.utils.html import escape

from models.models import ModelProfile
from planning import placement
from serving.models import Deployment, DeploymentSlot
from tests.emulated_nodes import make_emulated_node

LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")  # ~19.5 GiB


def profile_pk() -> int:
    return ModelProfile.objects.get(model__hf_id=LLAMA8_FP16[0], precision__code=LLAMA8_FP16[1], gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1).pk


BAD_INPUTS = [
    ({"name": "Bad Name!"}, "name"),
    ({"name": "bad\x00name"}, "name"),
    ({"name": "x" * 10_000}, "name"),
    ({"pin_node": "no-such-node"}, "pin_node"),
    ({"priority": "1000000"}, "priority"),
    ({"replicas": "0"}, "replicas"),
    ({"replicas": "many"}, "replicas"),
    ({"profile": "999999"}, "profile"),
    ({"pin_gpu_index": "7"}, "pin_gpu_index"),
]


def refused_naming(response, field: str) -> bool:  # type: ignore[no-untyped-def]
    """The message names the field (a NUL may be refused before the form, by the request
    checks every route has, with their own message)."""
    page = response.content.decode()
    return f"{field}:" in page or ("\x00" in response.wsgi_request.POST.get("name", "") and "NUL" in page)


def form(**overrides: str) -> dict[str, str]:
    return {"name": "llama8", "profile": str(profile_pk()), "replicas": "1", "priority": "0", "pin_node": "", **overrides}


@pytest.fixture
def node(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=2)


@pytest.mark.django_db
@pytest.mark.parametrize("bad, field", BAD_INPUTS)
def test_the_form_refuses_bad_input_with_the_apis_message_and_creates_nothing(client, operator, node, bad, field):
    client.force_login(operator)
    data = form(**bad)
    if field == "pin_gpu_index":
        data["pin_node"] = "emu-1"
    response = client.post("/deployments/new/", data)
    assert response.status_code == 400
    assert refused_naming(response, field)
    assert not Deployment.objects.exists() and not DeploymentSlot.objects.exists()


@pytest.mark.django_db
def test_the_form_and_the_api_give_the_same_message(client, operator, api_client_for, node):
    client.force_login(operator)
    page = client.post("/deployments/new/", form(name="Bad Name!")).content.decode()
    api = api_client_for(operator).post("/api/v1/deployments/", {"name": "Bad Name!", "profile": profile_pk(), "replicas": 1},
                                        format="json").json()
    (message,) = api["detail"]["name"]
    assert f"name: {escape(message)}" in page


@pytest.mark.django_db
def test_a_valid_form_places_the_deployment(client, operator, node):
    client.force_login(operator)
    response = client.post("/deployments/new/", form(pin_node="emu-1", spread="on", replicas="2"))
    assert response.status_code == 302
    deployment = Deployment.objects.get(name="llama8")
    assert (deployment.state, deployment.replicas, deployment.spread, deployment.pin_node.name) == ("scheduled", 2, True, "emu-1")
    assert deployment.slots.count() == 2


def _sqlite_file() -> str:
    if connection.vendor != "sqlite":
        pytest.skip("the write lock is SQLite's")
    return connection.settings_dict["NAME"]


@pytest.mark.django_db(transaction=True)
def test_bad_input_answers_400_at_once_while_another_process_holds_the_write_lock(client, operator, node):
    client.force_login(operator)
    other = sqlite3.connect(_sqlite_file(), timeout=1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another agent or worker writing
    try:
        for bad, field in BAD_INPUTS:
            data = form(**bad)
            if field == "pin_gpu_index":
                data["pin_node"] = "emu-1"
            began = time.monotonic()
            response = client.post("/deployments/new/", data)
            assert response.status_code == 400, (bad, response.status_code)
            assert refused_naming(response, field)
            assert time.monotonic() - began < 5, bad
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not Deployment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_placement_runs_without_the_write_lock(client, operator, node, monkeypatch):
    """While the page places, another connection can still write; the page then binds in a
    short transaction of its own."""
    path = _sqlite_file()
    real_place = placement.place
    writable_while_placing: list[bool] = []

    def place(*args, **kwargs):  # type: ignore[no-untyped-def]
        def try_write() -> None:
            other = sqlite3.connect(path, timeout=0.5, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                writable_while_placing.append(True)
            except sqlite3.OperationalError:
                writable_while_placing.append(False)
            finally:
                other.close()

        thread = threading.Thread(target=try_write)
        thread.start()
        thread.join()
        return real_place(*args, **kwargs)

    monkeypatch.setattr(placement, "place", place)
    client.force_login(operator)
    response = client.post("/deployments/new/", form())
    assert response.status_code == 302
    assert writable_while_placing and all(writable_while_placing)
    assert Deployment.objects.get(name="llama8").slots.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("plan", [str(2**70), "9" * 5000, "-1", "1.5", "x", "²"])
def test_the_operations_page_answers_for_any_plan_filter(client, viewer, plan):
    client.force_login(viewer)
    response = client.get("/operations/", {"plan": plan})
    assert response.status_code == 200
    assert "No operations match." in response.content.decode()
