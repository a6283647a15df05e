"""Safe actions on the deployment page (issue 13 §5): the stop button is marked destructive and
its confirmation names what stops; a stopped (or failed) deployment is redeployed as it was,
through the same service as the form."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from models.models import ModelProfile
from planning.models import Plan
from planning.services import DemandSpec
from serving.models import Deployment
from serving.services import create_deployment, stop_deployment
from tests.emulated_nodes import make_emulated_node

pytestmark = pytest.mark.django_db

LLAMA8_FP16 = ("meta-llama/Llama-3.1-8B-Instruct", "fp16")  # ~19.5 GiB: one per SPX GPU, fits a CPX partition too


class _Element(HTMLParser):
    """The attributes and the text of the element with ``id`` (first one) in a page."""

    VOID = {"input", "br", "img", "meta", "link", "hr", "source", "wbr"}

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id = element_id
        self.tag: str | None = None
        self.attrs_: dict[str, str | None] = {}
        self.depth = 0
        self.text: list[str] = []
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done:
            return
        if self.tag is None and dict(attrs).get("id") == self.element_id:
            self.tag, self.attrs_, self.depth = tag, dict(attrs), 1
            if tag in self.VOID:
                self.done = True
        elif self.tag is not None and tag not in self.VOID:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self.tag is not None and not self.done:
            self.depth -= 1
            if self.depth == 0:
                self.done = True

    def handle_data(self, data: str) -> None:
        if self.tag is not None and not self.done:
            self.text.append(data)


def element(response, element_id: str) -> tuple[dict[str, str | None], str] | None:  # type: ignore[no-untyped-def]
    """(attributes, whitespace-normalised text) of the element with ``element_id``, or None."""
    parser = _Element(element_id)
    parser.feed(response.content.decode())
    if parser.tag is None:
        return None
    return parser.attrs_, " ".join("".join(parser.text).split())


def classes(found: tuple[dict[str, str | None], str] | None) -> set[str]:
    assert found is not None
    return set((found[0].get("class") or "").split())


def profile() -> ModelProfile:
    return ModelProfile.objects.get(model__hf_id=LLAMA8_FP16[0], precision__code=LLAMA8_FP16[1], gpu_model="MI300X",
                                    context_tokens=8192, concurrent_sequences=1)


def deploy(name: str = "llama8", replicas: int = 1, **extra: object) -> Deployment:
    return create_deployment(spec=DemandSpec(name=name, profile=profile(), replicas=replicas, **extra))  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path, catalog):  # type: ignore[no-untyped-def]
    return make_emulated_node(tmp_path, "emu-1", gpus=2)


# --- stop: a destructive button whose confirmation names what stops ------------------------------

def test_the_stop_button_is_a_danger_button_that_opens_a_dialog_naming_the_replica_and_its_node(client, operator, node):
    deployment = deploy()
    client.force_login(operator)
    page = client.get(f"/deployments/{deployment.pk}/")
    button = element(page, "stop-deployment")
    assert "danger" in classes(button)
    assert button is not None and button[0].get("data-confirm") == "confirm-stop"
    dialog = element(page, "confirm-stop")
    assert dialog is not None
    assert "1 replica on emu-1" in dialog[1]
    assert "danger" in classes(element(page, "confirm-stop-submit"))


def test_the_stop_dialog_counts_replicas_over_several_nodes(client, operator, tmp_path, catalog):
    make_emulated_node(tmp_path, "emu-a", gpus=1)
    make_emulated_node(tmp_path, "emu-b", gpus=1)
    deployment = deploy(replicas=2, spread=True)
    client.force_login(operator)
    dialog = element(client.get(f"/deployments/{deployment.pk}/"), "confirm-stop")
    assert dialog is not None and "2 replicas on emu-a, emu-b" in dialog[1]


def test_the_stop_form_still_posts_without_javascript(client, operator, node):
    """The page's own button submits the form (the dialog only stands in front of it)."""
    deployment = deploy()
    client.force_login(operator)
    page = client.get(f"/deployments/{deployment.pk}/")
    form = element(page, "stop-form")
    assert form is not None and form[0]["action"] == f"/deployments/{deployment.pk}/stop/"
    assert element(page, "stop-deployment")[0].get("type") == "submit"  # type: ignore[index]
    assert client.post(form[0]["action"]).status_code == 302
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.STOPPED and not deployment.slots.exists()


def test_a_viewer_sees_no_stop_button(client, viewer, node):
    deployment = deploy()
    client.force_login(viewer)
    page = client.get(f"/deployments/{deployment.pk}/")
    assert element(page, "stop-deployment") is None and element(page, "confirm-stop") is None


# --- redeploy ---------------------------------------------------------------------------------------

def test_a_stopped_deployment_is_redeployed_as_it_was_under_the_same_name(client, operator, node):
    old = deploy(priority=5, spread=True, pin_node=node.node, pin_gpu_index=1)
    stop_deployment(deployment=old, reason="test")
    client.force_login(operator)
    page = client.get(f"/deployments/{old.pk}/")
    assert element(page, "stop-deployment") is None
    assert "primary" in classes(element(page, "redeploy"))

    response = client.post(f"/deployments/{old.pk}/redeploy/")

    new = Deployment.objects.exclude(pk=old.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/deployments/{new.pk}/"
    assert new.name == old.name and new.state in (Deployment.State.SCHEDULED, Deployment.State.RUNNING)
    assert (new.profile_id, new.replicas, new.priority, new.spread, new.pin_node_id, new.pin_gpu_index) == (
        old.profile_id, 1, 5, True, node.node.pk, 1)
    assert new.requested_by == operator
    assert {s.partition.gpu.index for s in new.slots.select_related("partition__gpu")} == {1}
    old.refresh_from_db()
    assert old.state == Deployment.State.STOPPED


def test_a_failed_deployment_can_be_redeployed(client, operator, node):
    old = deploy()
    stop_deployment(deployment=old, reason="test")
    Deployment.objects.filter(pk=old.pk).update(state=Deployment.State.FAILED)
    client.force_login(operator)
    assert element(client.get(f"/deployments/{old.pk}/"), "redeploy") is not None
    client.post(f"/deployments/{old.pk}/redeploy/")
    assert Deployment.objects.active().get().name == old.name


def test_a_viewer_may_not_redeploy(client, viewer, node):
    old = deploy()
    stop_deployment(deployment=old, reason="test")
    client.force_login(viewer)
    assert element(client.get(f"/deployments/{old.pk}/"), "redeploy") is None
    assert client.post(f"/deployments/{old.pk}/redeploy/").status_code == 403
    assert Deployment.objects.count() == 1


def test_an_active_deployment_is_not_redeployed(client, operator, node):
    deployment = deploy()
    client.force_login(operator)
    assert element(client.get(f"/deployments/{deployment.pk}/"), "redeploy") is None
    response = client.post(f"/deployments/{deployment.pk}/redeploy/", follow=True)
    assert "is still scheduled" in response.content.decode()
    assert Deployment.objects.count() == 1


def test_redeploy_refuses_a_name_an_active_deployment_took_meanwhile(client, operator, node):
    old = deploy()
    stop_deployment(deployment=old, reason="test")
    deploy()  # the same name, running again
    client.force_login(operator)
    response = client.post(f"/deployments/{old.pk}/redeploy/", follow=True)
    assert response.redirect_chain[-1][0] == f"/deployments/{old.pk}/"
    assert "name:" in response.content.decode()
    assert Deployment.objects.count() == 2


def test_redeploy_that_no_longer_fits_shows_the_conflict_like_the_form(client, operator, node):
    old = deploy(replicas=2)
    stop_deployment(deployment=old, reason="test")
    deploy(name="squatter", replicas=2)  # takes both GPUs
    client.force_login(operator)
    response = client.post(f"/deployments/{old.pk}/redeploy/")
    assert response.status_code == 409
    reasons = element(response, "conflict-reasons")
    assert reasons is not None and reasons[1]
    suggested = element(response, "suggested-plan")
    if suggested is not None:
        assert Plan.objects.filter(pk=int(str(suggested[0]["href"]).rstrip("/").rsplit("/", 1)[1])).exists()
    assert Deployment.objects.filter(name=old.name).count() == 1


# --- applying a plan that moves replicas ---------------------------------------------------------

def test_applying_a_plan_that_moves_a_replica_asks_first_naming_it_and_the_nodes(client, operator, node):
    from planning.planner import GpuTarget
    from planning.services import create_plan

    deploy(pin_node=node.node, pin_gpu_index=0)
    plan = create_plan(gpu_targets=[GpuTarget("emu-1", 0, "CPX")])
    assert plan.result["ok"] and len(plan.result["displaced"]) == 1
    client.force_login(operator)
    page = client.get(f"/plans/{plan.pk}/")
    button = element(page, "apply-plan")
    assert "danger" in classes(button) and button is not None and button[0].get("data-confirm") == "confirm-apply"
    dialog = element(page, "confirm-apply")
    assert dialog is not None
    assert "moves 1 replica" in dialog[1] and "llama8" in dialog[1] and "emu-1" in dialog[1]
    form = element(page, "apply-form")
    assert form is not None and form[0]["action"] == f"/plans/{plan.pk}/apply/"
    assert client.post(str(form[0]["action"])).status_code == 302
    plan.refresh_from_db()
    assert plan.state != Plan.State.DRAFT


def test_applying_a_plan_that_moves_nothing_is_a_primary_action_without_a_dialog(client, operator, node):
    from planning.planner import GpuTarget
    from planning.services import create_plan

    plan = create_plan(gpu_targets=[GpuTarget("emu-1", 1, "CPX")])
    assert plan.result["ok"] and not plan.result["displaced"]
    client.force_login(operator)
    page = client.get(f"/plans/{plan.pk}/")
    assert "primary" in classes(element(page, "apply-plan"))
    assert element(page, "confirm-apply") is None
