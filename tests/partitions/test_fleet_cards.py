"""The fleet page's cards: the health rule, allocated versus used memory, the filters' errors
and empty results, the card fragments the live update fetches, "Deploy here", and what the
services publish for the live fleet and the toasts."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from models.models import ModelProfile
from partitions import fleetcards
from partitions.models import GPU, Node, Reconfiguration
from partitions.services import sync_inventory
from serving.models import Deployment, DeploymentSlot

pytestmark = pytest.mark.django_db

FRESH = {"stale_after_s": 10.0, "snapshot_age_s": 1.0, "agent_alive": True}


# --- the health rule -----------------------------------------------------------------------

def test_health_is_healthy_only_with_a_live_agent_fresh_telemetry_and_nothing_wrong():
    sample = {"index": 0, "ecc_uncorrectable": 0, "temperature_c": 61.0}
    assert fleetcards.gpu_health(marked="unknown", sample=sample, **FRESH).state == "healthy"


@pytest.mark.parametrize("changes, reason", [
    ({"agent_alive": False}, "agent is down"),
    ({"snapshot_age_s": None}, "no telemetry"),
    ({"snapshot_age_s": 25.0}, "stale (25 s old)"),
    ({"sample": None}, "no telemetry sample of this GPU"),
])
def test_health_is_unknown_without_fresh_data(changes, reason):
    args = {"marked": "healthy", "sample": {"index": 0}, **FRESH, **changes}
    health = fleetcards.gpu_health(**args)
    assert health.state == "unknown" and reason in health.summary


@pytest.mark.parametrize("sample, reason", [
    ({"ecc_uncorrectable": 3, "temperature_c": 60}, "3 uncorrectable ECC errors"),
    ({"ecc_uncorrectable": 0, "temperature_c": 104.5}, "hotspot 104 °C"),
])
def test_health_is_unhealthy_on_ras_errors_or_overheating(sample, reason):
    health = fleetcards.gpu_health(marked="healthy", sample=sample, **FRESH)
    assert health.state == "unhealthy" and reason in health.summary


def test_an_unhealthy_mark_wins_even_when_the_agent_is_down():
    health = fleetcards.gpu_health(marked="unhealthy", marked_reason="rollback failed", agent_alive=False,
                                   snapshot_age_s=None, stale_after_s=10, sample=None)
    assert health.state == "unhealthy" and "rollback failed" in health.summary


# --- allocated versus used -------------------------------------------------------------------

def test_memory_bars_sum_partitions_and_keep_missing_readings_missing():
    a = fleetcards.partition_memory(total_gb=24, allocated_gb=20, used_mb=10 * 1024)
    b = fleetcards.partition_memory(total_gb=24, allocated_gb=None, used_mb=None)
    assert (a.allocated_pct, a.used_pct, b.used_pct) == (83, 42, None)
    gpu = fleetcards.gpu_memory([a, b])
    assert (gpu.total_gb, gpu.allocated_gb, gpu.used_gb, gpu.allocated_pct) == (48, 20, 10, 42)
    assert fleetcards.gpu_memory([b]).used_gb is None
    over = fleetcards.partition_memory(total_gb=24, allocated_gb=30, used_mb=None)
    assert over.over_allocated and over.allocated_pct == 100


def _snapshot(node: str, used_mb: float, **gpu: object) -> dict:
    return {"node": node, "ts": time.time(), "interval_s": 1.0, "emulated": True,
            "gpus": [{"index": 0, "ecc_uncorrectable": 0, "temperature_c": 50.0, **gpu,
                      "partitions": [{"index": 0, "logical_index": 0, "gfx_activity": 40.0, "derived": False,
                                      "vram_used_mb": used_mb, "vram_total_mb": 196608}]}]}


@pytest.fixture
def occupied(emulated, catalog, monkeypatch):  # type: ignore[no-untyped-def]
    """emu-a GPU 0 (SPX) runs a deployment; its agent is alive and its telemetry fresh."""
    profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("memory_required_gb").first()
    deployment = Deployment.objects.create(name="tiny-llama-chat-with-a-long-name", profile=profile, replicas=1,
                                           state=Deployment.State.RUNNING)
    part = GPU.objects.get(node=emulated.node, index=0).partitions.get()
    DeploymentSlot.objects.create(deployment=deployment, replica=0, partition=part)
    Node.objects.filter(pk=emulated.node.pk).update(agent_heartbeat_at=timezone.now())
    monkeypatch.setattr("partitions.telemetry_store.read_snapshots_sync",
                        lambda names: {"emu-a": _snapshot("emu-a", 30 * 1024)} if "emu-a" in names else {})
    return profile


def test_cards_show_allocated_and_emulated_used_memory_and_health(client, viewer, occupied):
    client.force_login(viewer)
    html = client.get("/fleet/").content.decode()
    gpu0 = html[html.index('id="gpu-emu-a-0"'):html.index('id="gpu-emu-a-1"')]
    allocated = occupied.replica_memory_gb
    assert f"{round(allocated, 1):g} / 192 GiB" in gpu0
    assert "used (emulated)" in gpu0 and "30 GiB (16 %)" in gpu0
    assert 'data-health="healthy"' in gpu0 and ">healthy</span>" in gpu0
    gpu1 = html[html.index('id="gpu-emu-a-1"'):]
    assert 'data-health="unknown"' in gpu1 and "no telemetry sample of this GPU" in gpu1  # not in the snapshot


def test_cpx_cards_name_occupants_in_full_in_the_partition_table(client, viewer, emulated, catalog):
    from amdsmi_emulator.model import Hive, resize_partitions
    from partitions.services import sync_node

    with emulated.state.transaction() as data:
        gpu = data["gpus"][0]
        gpu["compute_mode"] = "CPX"
        resize_partitions(gpu, Hive(data).spec)
    sync_node(node=emulated.node)
    profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("memory_required_gb").first()
    deployment = Deployment.objects.create(name="llama-3-8b-instruct-chat", profile=profile, replicas=1,
                                           state=Deployment.State.RUNNING)
    DeploymentSlot.objects.create(deployment=deployment, replica=0,
                                  partition=GPU.objects.get(node=emulated.node, index=0).partitions.get(index=3))
    client.force_login(viewer)
    html = client.get("/fleet/").content.decode()
    card = html[html.index('id="gpu-emu-a-0"'):html.index('id="gpu-emu-a-1"')]
    table = card[card.index("<details"):]
    assert table.count("<tr data-logical") == 8
    assert ">llama-3-8b-instruct-chat</a>" in table
    assert "llama-3-8b-instruct-chat</a>" not in card[:card.index("<details")]  # the boxes show a number only
    assert "derived" in html[html.index('id="derived-note"'):][:300]


# --- filters -----------------------------------------------------------------------------------

def test_invalid_filter_values_are_inline_errors(client, viewer, emulated):
    client.force_login(viewer)
    response = client.get("/fleet/", {"free": "lots", "mode": "ZPX"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "These filters cannot be used" in html
    assert "Free ≥ (GiB): Enter a number." in html and "Mode: Select a valid choice." in html
    assert html.count('<article class="gpu') == 2  # the invalid filters are not applied


def test_an_empty_filtered_result_offers_to_clear_the_filters(client, viewer, emulated):
    client.force_login(viewer)
    html = client.get("/fleet/", {"free": "193"}).content.decode()
    assert "No GPUs match these filters" in html and 'href="/fleet/">clear filters</a>' in html
    assert "sync_node" not in html
    assert "register" not in client.get("/fleet/", {"node": "nope"}).content.decode().lower()


def test_mode_options_are_the_modes_in_the_fleet(client, viewer, emulated):
    client.force_login(viewer)
    html = client.get("/fleet/").content.decode()
    select = html[html.index('<select name="mode">'):]
    select = select[:select.index("</select>")]
    assert "<option >SPX</option>" in select.replace("<option  >", "<option >") or ">SPX</option>" in select
    assert "CPX" not in select and "DPX" not in select


# --- "Deploy here" and the fragments -------------------------------------------------------------

def test_deploy_here_pins_the_node_for_operators_only(client, viewer, operator, emulated):
    client.force_login(operator)
    assert 'href="/deployments/new/?pin_node=emu-a">Deploy here</a>' in client.get("/fleet/").content.decode()
    client.force_login(viewer)
    assert "Deploy here" not in client.get("/fleet/").content.decode()


def test_card_fragments_render_the_current_layout(client, viewer, emulated):
    from amdsmi_emulator.model import Hive, resize_partitions
    from partitions.services import sync_node

    client.force_login(viewer)
    before = client.get("/fleet/gpu/emu-a/0/card/").content.decode()
    assert before.count('class="part ') == 1 and 'data-mode="SPX"' in before and "<html" not in before
    with emulated.state.transaction() as data:
        gpu = data["gpus"][0]
        gpu["compute_mode"] = "CPX"
        resize_partitions(gpu, Hive(data).spec)
    sync_node(node=emulated.node)
    after = client.get("/fleet/gpu/emu-a/0/card/").content.decode()
    assert after.count('class="part ') == 8 and 'data-mode="CPX"' in after
    node = client.get("/fleet/node/emu-a/card/").content.decode()
    assert node.count('<article class="gpu') == 2 and 'data-node="emu-a"' in node
    assert client.get("/fleet/gpu/emu-a/0/card/", {"mode": "SPX"}).content == b""  # no longer matches
    assert client.get("/fleet/node/nope/card/").content == b""


def test_card_fragments_need_a_signed_in_user(client, emulated):
    assert client.get("/fleet/node/emu-a/card/").status_code in (302, 401, 403)


# --- what the services publish -----------------------------------------------------------------

@pytest.fixture
def sent(monkeypatch):  # type: ignore[no-untyped-def]
    out: list[tuple[str, dict]] = []
    monkeypatch.setattr("partitions.events._send", lambda group, event, loop=None: out.append((group, event)))
    monkeypatch.setattr("partitions.services.reconfiguration.enqueue", lambda pk: True)
    return out


def test_an_inventory_sync_that_changes_the_layout_announces_the_node(emulated, sent, django_capture_on_commit_callbacks):
    from partitions.services import backend_for

    inventory = backend_for(emulated.node).inventory()
    with django_capture_on_commit_callbacks(execute=True):
        sync_inventory(node=emulated.node, inventory=inventory)
    assert [e for g, e in sent if g == "fleet"] == []  # nothing changed: nothing to say
    from amdsmi_emulator.model import Hive, resize_partitions

    with emulated.state.transaction() as data:
        data["gpus"][0]["compute_mode"] = "CPX"
        resize_partitions(data["gpus"][0], Hive(data).spec)
    with django_capture_on_commit_callbacks(execute=True):
        sync_inventory(node=emulated.node, inventory=backend_for(emulated.node).inventory())
    assert ("fleet", {"type": "fleet.changed", "node": "emu-a", "gpus": None}) in sent


def test_an_operation_announces_its_gpu_and_tells_its_requester_when_it_finishes(emulated, operator, sent,
                                                                               django_capture_on_commit_callbacks):
    from partitions.services.reconfiguration import OperationClaim, claim_reconfiguration, request_reconfiguration

    gpu = GPU.objects.get(node=emulated.node, index=1)
    with django_capture_on_commit_callbacks(execute=True):
        op = request_reconfiguration(gpu=gpu, compute_mode="CPX", requested_by=operator)
    assert ("fleet", {"type": "fleet.changed", "node": "emu-a", "gpus": [1]}) in sent
    assert not [g for g, _ in sent if g.startswith("user.")]  # not finished yet
    claim = claim_reconfiguration(op.pk, worker="test")
    assert isinstance(claim, OperationClaim)
    with django_capture_on_commit_callbacks(execute=True):
        claim.transition(Reconfiguration.State.DRAINING, "drain", "draining")
        claim.transition(Reconfiguration.State.FAILED, "fail", "refused", error_code="x", error_message="it broke")
    notices = [e for g, e in sent if g == f"user.{operator.pk}"]
    assert len(notices) == 1
    assert notices[0]["type"] == "user.notice" and notices[0]["state"] == "failed" and notices[0]["level"] == "bad"
    assert notices[0]["url"] == f"/operations/{op.pk}/" and "it broke" in notices[0]["message"]


def test_publishing_never_raises_when_the_layer_is_broken(monkeypatch, django_capture_on_commit_callbacks):
    from partitions import events

    def broken():  # type: ignore[no-untyped-def]
        raise ConnectionError("redis down")

    monkeypatch.setattr(events, "get_channel_layer", broken)
    with django_capture_on_commit_callbacks(execute=True):
        events.publish_fleet_changed("n1", [0])
        events.publish_user_notice(1, kind="operation", state="succeeded", title="t")
    events.publish_heartbeat("n1", 1.0)


def test_deployment_state_changes_refresh_the_fleet_and_tell_the_requester(emulated, operator, catalog, sent,
                                                                          django_capture_on_commit_callbacks):
    from serving import events as serving_events

    profile = ModelProfile.objects.filter(gpu_model="MI300X").order_by("memory_required_gb").first()
    deployment = Deployment.objects.create(name="chat", profile=profile, replicas=1, state=Deployment.State.RUNNING,
                                           requested_by=operator)
    DeploymentSlot.objects.create(deployment=deployment, replica=0,
                                  partition=GPU.objects.get(node=emulated.node, index=0).partitions.get())
    with django_capture_on_commit_callbacks(execute=True):
        serving_events.publish_deployment_state(deployment, "scheduled")
    assert ("fleet", {"type": "fleet.changed", "node": "emu-a", "gpus": None}) in sent
    notices = [e for g, e in sent if g == f"user.{operator.pk}"]
    assert [(n["kind"], n["state"], n["title"]) for n in notices] == [("deployment", "running", "Deployment chat is running")]


# --- the operation page shows the layout -------------------------------------------------------

def test_a_node_operation_shows_its_target_and_previous_layout(client, viewer, emulated, sent):
    from partitions.services.reconfiguration import request_reconfiguration

    op = request_reconfiguration(node=emulated.node, memory_mode="NPS4", compute_mode="CPX")
    Reconfiguration.objects.filter(pk=op.pk).update(previous_layout={"gpus": {
        "0": {"compute_mode": "SPX", "memory_mode": "NPS1"}, "1": {"compute_mode": "SPX", "memory_mode": "NPS1"}}})
    client.force_login(viewer)
    html = client.get(f"/operations/{op.pk}/").content.decode()
    table = html[html.index('id="op-layout-table"'):]
    table = table[:table.index("</table>")]
    assert "memory (NPS) mode NPS4, CPX on every GPU" in table
    assert table.count('data-gpu-index="') == 2
    assert table.count('<td data-col="before">SPX + NPS1</td>') == 2
    assert table.count('<td data-col="target">CPX + NPS4') == 2
