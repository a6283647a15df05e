"""The audit trail page links each entry's object (node, GPU, deployment, plan, reconfiguration,
catalog model) to its page, by name, in a fixed number of queries."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from aimconsole.models import AuditEvent
from models.models import InferenceModel, ModelProfile
from partitions.models import GPU, Node, Reconfiguration
from planning.models import Plan
from serving.models import Deployment

pytestmark = pytest.mark.django_db


def make_world(n: int) -> list[tuple[str, str, str]]:
    """n objects of every kind, each with an audit entry; (type, url, label) expected per entry."""
    profile = ModelProfile.objects.select_related("model").first()
    models = list(InferenceModel.objects.order_by("pk")[:n])
    expected = []
    for i in range(n):
        node = Node.objects.create(name=f"al-node-{Node.objects.count()}", backend=Node.Backend.SIMULATED)
        gpu = GPU.objects.create(node=node, index=i, bdf=f"0000:0{i}:00.0")
        op = Reconfiguration.objects.create(kind=Reconfiguration.Kind.COMPUTE, node=node, gpu=gpu, gpu_index=gpu.index,
                                            target_compute_mode="CPX")
        plan = Plan.objects.create(request={}, result={"ok": True}, fingerprint="f")
        deployment = Deployment.objects.create(name=f"al-dep-{Deployment.objects.count()}", profile=profile, replicas=1,
                                               state=Deployment.State.STOPPED)
        model = models[i]
        for obj, url, label in (
            (node, reverse("planning:node-editor", args=[node.name]), node.name),
            (gpu, reverse("planning:gpu-editor", args=[gpu.pk]), f"{node.name} GPU {gpu.index}"),
            (op, reverse("partitions:operation-detail", args=[op.pk]), f"operation #{op.pk}"),
            (plan, reverse("planning:plan-detail", args=[plan.pk]), f"plan #{plan.pk}"),
            (deployment, reverse("serving:deployment-detail", args=[deployment.pk]), deployment.name),
            (model, reverse("catalog:model-detail", args=[model.pk]), model.hf_id),
        ):
            object_type = f"{obj._meta.app_label}.{obj._meta.model_name}"
            AuditEvent.objects.create(actor="test", action="test.touch", object_type=object_type, object_id=str(obj.pk),
                                      object_repr=str(obj))
            expected.append((object_type, url, label))
    return expected


def link_list(html: str) -> list[tuple[str, str]]:
    table = html[html.index('id="audit"'):]
    return re.findall(r'<a class="objlink" href="([^"]+)">([^<]+)</a>', table)


def links(html: str) -> set[tuple[str, str]]:
    return set(link_list(html))


def test_each_entry_links_its_object_by_name(client, admin_user, catalog):
    expected = make_world(2)
    client.force_login(admin_user)
    html = client.get(reverse("audit-log"), {"actor": "test"}).content.decode()
    assert links(html) == {(url, label) for _, url, label in expected}
    assert "al-node-0 GPU 0" in html


def test_objects_that_are_gone_or_of_other_kinds_are_shown_without_a_link(client, admin_user, catalog):
    AuditEvent.objects.create(actor="test", action="test.gone", object_type="partitions.node", object_id="999999",
                              object_repr="old-node")
    AuditEvent.objects.create(actor="test", action="test.bad", object_type="planning.plan", object_id="not-a-number")
    AuditEvent.objects.create(actor="test", action="token.create", object_type="aimconsole.apitoken", object_id="1",
                              object_repr="t (aim_x_…)")
    client.force_login(admin_user)
    response = client.get(reverse("audit-log"), {"actor": "test"})
    assert response.status_code == 200
    html = response.content.decode()
    assert links(html) == set()
    assert "old-node" in html and "no longer exists" in html
    assert "aimconsole.apitoken 1" in html


def test_resolving_objects_takes_a_fixed_number_of_queries(client, admin_user, catalog, django_assert_max_num_queries):
    make_world(1)
    client.force_login(admin_user)
    with django_assert_max_num_queries(20) as few:
        client.get(reverse("audit-log"), {"actor": "test"})
    make_world(4)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(reverse("audit-log"), {"actor": "test"}).content.decode()
    assert len(link_list(html)) == 5 * 6  # every entry linked


def test_user_and_group_entries_link_their_admin_pages(client, admin_user, viewer):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="night-shift")
    viewer.groups.add(group)
    client.force_login(admin_user)
    html = client.get(reverse("audit-log"), {"action": "auth."}).content.decode()
    assert (reverse("admin:auth_user_change", args=[viewer.pk]), "vera") in links(html)
    assert (reverse("admin:auth_group_change", args=[group.pk]), "night-shift") in links(html)
