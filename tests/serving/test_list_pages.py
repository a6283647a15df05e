"""The operations and deployments lists: paginated 50 a page with the total (no silent cap),
sorted through a checked ``sort``, filters checked (a bad value answered inline with a 400),
and exported as CSV with the same filters; the query count does not grow with the rows
(issue 13, 4). They behave as the plans list does."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from models.models import ModelProfile
from partitions.models import Node, Partition, Reconfiguration
from serving.models import Deployment, DeploymentSlot
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

T0 = timezone.now() - timedelta(days=1)


@pytest.fixture
def profile(catalog):  # type: ignore[no-untyped-def]
    return ModelProfile.objects.get(model__hf_id="meta-llama/Llama-3.1-8B-Instruct", precision__code="fp16",
                                    gpu_model="MI300X", context_tokens=8192, concurrent_sequences=1)


@pytest.fixture
def node(db) -> Node:  # type: ignore[no-untyped-def]
    return Node.objects.create(name="node-a")


_made = {"n": 0}


def _next_time() -> timezone.datetime:
    """Each row a second after the previous one, so the order is known."""
    _made["n"] += 1
    return T0 + timedelta(seconds=_made["n"])


def make_deployments(count: int, profile: ModelProfile, *, state: str = Deployment.State.STOPPED, prefix: str = "dep",
                     message: str = "") -> list[Deployment]:
    made = []
    for i in range(count):
        d = Deployment.objects.create(name=f"{prefix}-{i:03d}", profile=profile, replicas=1, state=state, state_message=message)
        Deployment.objects.filter(pk=d.pk).update(created_at=_next_time())
        made.append(d)
    return made


def make_reconfigurations(count: int, node: Node, *, state: str = Reconfiguration.State.SUCCEEDED,
                          error: str = "") -> list[Reconfiguration]:
    made = []
    for _ in range(count):
        op = Reconfiguration.objects.create(kind=Reconfiguration.Kind.MEMORY, node=node, target_memory_mode="NPS1",
                                            state=state, error_message=error)
        Reconfiguration.objects.filter(pk=op.pk).update(created_at=_next_time())
        made.append(op)
    return made


def deployment_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a href="/deployments/(\d+)/">', html)]


def operation_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a href="/operations/(\d+)/">', html)]


def read_csv(response) -> list[list[str]]:  # type: ignore[no-untyped-def]
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.reader(io.StringIO(content.decode())))


# --- deployments ---------------------------------------------------------------------------------

def test_the_deployments_list_pages_fifty_at_a_time_with_the_total(client, viewer, profile):
    made = make_deployments(63, profile)
    client.force_login(viewer)
    first_html = client.get("/deployments/").content.decode()
    second_html = client.get("/deployments/", {"page": 2}).content.decode()
    first, second = deployment_ids(first_html), deployment_ids(second_html)
    assert first == [d.pk for d in reversed(made)][:50]  # newest first
    assert second == [d.pk for d in reversed(made)][50:]
    assert "63 deployments" in first_html and "page 1 of 2" in first_html
    assert "page 2 of 2" in second_html


def test_the_deployments_pager_keeps_the_filters(client, viewer, profile):
    make_deployments(55, profile, state=Deployment.State.FAILED)
    make_deployments(3, profile, prefix="other")
    client.force_login(viewer)
    html = client.get("/deployments/", {"state": "failed", "sort": "name"}).content.decode()
    assert "55 deployments" in html
    assert re.search(r'href="\?(?=[^"]*state=failed)(?=[^"]*sort=name)(?=[^"]*page=2)[^"]*">next', html)


@pytest.mark.parametrize("sort, key, reverse", [
    ("-created", "created_at", True), ("created", "created_at", False),
    ("name", "name", False), ("-name", "name", True),
])
def test_the_deployments_list_sorts_both_ways(client, viewer, profile, sort, key, reverse):
    made = make_deployments(4, profile)
    # Names in another order than creation, so sorting by name is not sorting by time.
    for d, name in zip(made, ["c-x", "a-x", "d-x", "b-x"], strict=True):
        Deployment.objects.filter(pk=d.pk).update(name=name)
    client.force_login(viewer)
    html = client.get("/deployments/", {"sort": sort}).content.decode()
    expected = sorted(Deployment.objects.all(), key=lambda d: getattr(d, key), reverse=reverse)
    assert deployment_ids(html) == [d.pk for d in expected]


def test_the_deployments_list_sorts_by_state_both_ways(client, viewer, profile):
    failed = make_deployments(1, profile, state=Deployment.State.FAILED, prefix="f")
    stopped = make_deployments(1, profile, state=Deployment.State.STOPPED, prefix="s")
    pending = make_deployments(1, profile, state=Deployment.State.PENDING, prefix="p")
    client.force_login(viewer)
    ascending = [failed[0].pk, pending[0].pk, stopped[0].pk]  # failed < pending < stopped
    assert deployment_ids(client.get("/deployments/", {"sort": "state"}).content.decode()) == ascending
    assert deployment_ids(client.get("/deployments/", {"sort": "-state"}).content.decode()) == ascending[::-1]


@pytest.mark.parametrize("params, message", [
    ({"state": "exploded"}, "Select a valid choice"),
    ({"state": "x\u202ey"}, "Select a valid choice"),
    ({"sort": "profile"}, "Select a valid choice"),
    ({"sort": "name\u202e"}, "Select a valid choice"),
])
def test_a_bad_deployments_filter_or_sort_is_answered_inline(client, viewer, profile, params, message):
    make_deployments(2, profile)
    client.force_login(viewer)
    response = client.get("/deployments/", params)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and 'role="alert"' in html
    assert "\u202e" not in html  # the refused value shown with its controls visible
    assert deployment_ids(html) == []


def test_the_deployments_csv_has_every_matching_row_and_no_formulas(client, viewer, profile):
    make_deployments(2, profile, state=Deployment.State.FAILED)
    wanted = make_deployments(57, profile, state=Deployment.State.STOPPED, message="=HYPERLINK(\"http://x\")")
    client.force_login(viewer)
    response = client.get("/deployments/", {"format": "csv", "state": "stopped"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    header = rows[0]
    assert header[:2] == ["id", "name"] and "state_message" in header and "url" in header
    assert [int(r[0]) for r in rows[1:]] == [d.pk for d in reversed(wanted)]  # all of them, not one page
    first = dict(zip(header, rows[1], strict=True))
    assert first["state"] == "stopped"
    assert first["state_message"] == "'=HYPERLINK(\"http://x\")"
    assert first["url"] == f"http://testserver/deployments/{wanted[-1].pk}/"


@pytest.mark.parametrize("message", ["+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_every_formula_prefix_is_quoted_in_the_deployments_csv(client, viewer, profile, message):
    make_deployments(1, profile, message=message)
    client.force_login(viewer)
    rows = read_csv(client.get("/deployments/", {"format": "csv"}))
    assert dict(zip(rows[0], rows[1], strict=True))["state_message"] == "'" + message


def test_the_deployments_csv_with_a_bad_filter_is_a_400_not_a_file(client, viewer):
    client.force_login(viewer)
    response = client.get("/deployments/", {"format": "csv", "sort": "nope"})
    assert response.status_code == 400
    assert not response.get("Content-Disposition")


def test_the_deployments_list_query_count_does_not_grow_with_the_rows(client, viewer, profile, tmp_path,
                                                                       django_assert_max_num_queries):
    emu = make_emulated_node(tmp_path, "emu-1", gpus=8).node
    partitions = iter(Partition.objects.filter(gpu__node=emu).order_by("gpu__index", "index"))

    def with_slot(deployments: list[Deployment]) -> None:
        for d in deployments:
            Deployment.objects.filter(pk=d.pk).update(state=Deployment.State.RUNNING)
            DeploymentSlot.objects.create(deployment=d, replica=0, partition=next(partitions))

    with_slot(make_deployments(5, profile))
    client.force_login(viewer)
    with django_assert_max_num_queries(20) as few:
        assert client.get("/deployments/").status_code == 200
    with_slot(make_deployments(3, profile, prefix="more"))
    make_deployments(52, profile, prefix="stopped")
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        html = client.get("/deployments/").content.decode()
    assert len(deployment_ids(html)) == 50
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_deployments_csv_query_count_does_not_grow_with_the_rows(client, viewer, profile, django_assert_max_num_queries):
    make_deployments(5, profile)
    client.force_login(viewer)
    with django_assert_max_num_queries(12) as few:
        assert len(read_csv(client.get("/deployments/", {"format": "csv"}))) == 6
    make_deployments(55, profile, prefix="more")
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        assert len(read_csv(client.get("/deployments/", {"format": "csv"}))) == 61
    assert len(many.captured_queries) == len(few.captured_queries)


# --- operations ----------------------------------------------------------------------------------

def test_the_operations_list_pages_fifty_at_a_time_across_both_kinds(client, viewer, profile, node):
    ops = make_reconfigurations(35, node)
    deployments = make_deployments(30, profile)
    client.force_login(viewer)
    first_html = client.get("/operations/").content.decode()
    second_html = client.get("/operations/", {"page": 2}).content.decode()
    assert "65 operations" in first_html and "page 1 of 2" in first_html and "page 2 of 2" in second_html
    # Newest first across both kinds: the 30 deployments came last, so page 1 holds all of
    # them and the 20 newest reconfigurations; page 2 the 15 oldest reconfigurations.
    assert deployment_ids(first_html) == [d.pk for d in reversed(deployments)]
    assert operation_ids(first_html) == [op.pk for op in reversed(ops)][:20]
    assert deployment_ids(second_html) == []
    assert operation_ids(second_html) == [op.pk for op in reversed(ops)][20:]


def test_the_operations_list_pages_one_kind_with_the_filters_kept(client, viewer, profile, node):
    ops = make_reconfigurations(60, node, state=Reconfiguration.State.FAILED)
    make_reconfigurations(2, node)
    make_deployments(5, profile, state=Deployment.State.FAILED)
    client.force_login(viewer)
    params = {"kind": "reconfiguration", "state": "failed", "node": "node-a"}
    html = client.get("/operations/", params).content.decode()
    assert "60 operations" in html and deployment_ids(html) == []
    assert operation_ids(html) == [op.pk for op in reversed(ops)][:50]
    assert re.search(r'href="\?(?=[^"]*kind=reconfiguration)(?=[^"]*state=failed)(?=[^"]*node=node-a)(?=[^"]*page=2)'
                     r'[^"]*">next', html)
    assert operation_ids(client.get("/operations/", {**params, "page": 2}).content.decode()) == [op.pk for op in reversed(ops)][50:]


def test_the_operations_list_sorts_both_ways(client, viewer, profile, node):
    ops = make_reconfigurations(3, node)
    deployments = make_deployments(3, profile)
    client.force_login(viewer)
    newest = client.get("/operations/", {"sort": "-created"}).content.decode()
    oldest = client.get("/operations/", {"sort": "created"}).content.decode()
    assert operation_ids(newest) == [op.pk for op in reversed(ops)]
    assert deployment_ids(newest) == [d.pk for d in reversed(deployments)]
    assert operation_ids(oldest) == [op.pk for op in ops]
    assert deployment_ids(oldest) == [d.pk for d in deployments]


@pytest.mark.parametrize("params, message", [
    ({"kind": "everything"}, "Select a valid choice"),
    ({"state": "exploded"}, "Select a valid choice"),
    ({"node": "no-such-node"}, "Select a valid choice"),
    ({"node": "bad\u202enode"}, "Select a valid choice"),
    ({"sort": "name"}, "Select a valid choice"),
    ({"plan": "1\u202e"}, "control characters"),
])
def test_a_bad_operations_filter_or_sort_is_answered_inline(client, viewer, profile, node, params, message):
    make_reconfigurations(2, node)
    make_deployments(2, profile)
    client.force_login(viewer)
    response = client.get("/operations/", params)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and 'role="alert"' in html
    assert "\u202e" not in html
    assert operation_ids(html) == [] and deployment_ids(html) == []


def test_the_operations_csv_has_every_matching_row_of_both_kinds_and_no_formulas(client, viewer, profile, node):
    ops = make_reconfigurations(40, node, state=Reconfiguration.State.FAILED, error="-rm -rf")
    deployments = make_deployments(25, profile, state=Deployment.State.FAILED, message="@cmd|' /C calc'!A0")
    make_reconfigurations(3, node)
    make_deployments(2, profile, prefix="stopped")
    client.force_login(viewer)
    response = client.get("/operations/", {"format": "csv", "state": "failed", "sort": "created"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    header = rows[0]
    assert header[:3] == ["kind", "id", "created_at"] and "message" in header and "url" in header
    assert [(r[0], int(r[1])) for r in rows[1:]] == ([("reconfiguration", op.pk) for op in ops]
                                                     + [("deployment", d.pk) for d in deployments])
    by_kind = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert by_kind["reconfiguration"]["message"] == "'-rm -rf"
    assert by_kind["deployment"]["message"] == "'@cmd|' /C calc'!A0"
    assert by_kind["deployment"]["url"] == f"http://testserver/deployments/{deployments[-1].pk}/"


def test_the_operations_csv_with_a_bad_filter_is_a_400_not_a_file(client, viewer):
    client.force_login(viewer)
    response = client.get("/operations/", {"format": "csv", "kind": "nope"})
    assert response.status_code == 400
    assert not response.get("Content-Disposition")


def test_the_operations_list_query_count_does_not_grow_with_the_rows(client, viewer, profile, node,
                                                                      django_assert_max_num_queries):
    make_reconfigurations(3, node)
    make_deployments(2, profile)
    client.force_login(viewer)
    with django_assert_max_num_queries(20) as few:
        assert client.get("/operations/").status_code == 200
    make_reconfigurations(30, node)
    make_deployments(25, profile, prefix="more")
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        html = client.get("/operations/").content.decode()
    assert len(operation_ids(html)) + len(deployment_ids(html)) == 50
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_operations_csv_query_count_does_not_grow_with_the_rows(client, viewer, profile, node,
                                                                     django_assert_max_num_queries):
    make_reconfigurations(3, node)
    make_deployments(2, profile)
    client.force_login(viewer)
    with django_assert_max_num_queries(12) as few:
        assert len(read_csv(client.get("/operations/", {"format": "csv"}))) == 6
    make_reconfigurations(30, node)
    make_deployments(25, profile, prefix="more")
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        assert len(read_csv(client.get("/operations/", {"format": "csv"}))) == 61
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_node_filter_lists_deployments_on_or_pinned_to_the_node_once(client, viewer, profile, tmp_path):
    emu = make_emulated_node(tmp_path, "emu-1", gpus=2).node
    other = Node.objects.create(name="node-b")
    on_two_slots, pinned, elsewhere = (make_deployments(1, profile, state=Deployment.State.RUNNING, prefix=p)[0]
                                       for p in ("two", "pin", "else"))
    for replica, partition in enumerate(Partition.objects.filter(gpu__node=emu).order_by("gpu__index", "index")[:2]):
        DeploymentSlot.objects.create(deployment=on_two_slots, replica=replica, partition=partition)
    Deployment.objects.filter(pk=pinned.pk).update(pin_node=emu)
    Deployment.objects.filter(pk=elsewhere.pk).update(pin_node=other)
    client.force_login(viewer)
    html = client.get("/operations/", {"node": "emu-1"}).content.decode()
    assert deployment_ids(html) == [pinned.pk, on_two_slots.pk]
    assert "2 operations" in html
