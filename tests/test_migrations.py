"""Upgrading a database made before the split of the partitions app, with data in it.

Plans moved to ``planning`` and deployments to ``serving`` by state-only migrations: the rows
must still be there afterwards, reachable through the new models, with their relations, and
the permissions granted on the old content types must still be granted.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE_SPLIT = [
    ("partitions", "0003_deployments_and_plans"),
    ("planning", None),
    ("serving", None),
]


def _migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


@pytest.mark.django_db(transaction=True)
def test_upgrade_keeps_plans_deployments_slots_and_their_permissions() -> None:
    from models.models import InferenceModel
    from models.services import load_catalog

    if not InferenceModel.objects.exists():  # an earlier transactional test flushed it
        load_catalog()
    # The models as the applied migrations define them (the state before the split).
    old = _migrate(BEFORE_SPLIT)._create_project_state(with_applied_migrations=True).apps
    Node = old.get_model("partitions", "Node")
    GPU = old.get_model("partitions", "GPU")
    Partition = old.get_model("partitions", "Partition")
    Reconfiguration = old.get_model("partitions", "Reconfiguration")
    OldPlan = old.get_model("partitions", "Plan")
    OldDeployment = old.get_model("partitions", "Deployment")
    OldSlot = old.get_model("partitions", "DeploymentSlot")
    Profile = old.get_model("catalog", "ModelProfile")
    OldContentType = old.get_model("contenttypes", "ContentType")
    OldPermission = old.get_model("auth", "Permission")
    OldGroup = old.get_model("auth", "Group")

    profile = Profile.objects.order_by("pk").first()
    assert profile is not None, "the catalog is loaded into the test database"
    node = Node.objects.create(name="upgrade-1", backend="simulated", memory_mode="NPS1")
    gpu = GPU.objects.create(node=node, index=0, gpu_model="MI300X", compute_mode="SPX", memory_mode="NPS1")
    partition = Partition.objects.create(gpu=gpu, index=0, logical_index=0, memory_gb=192.0)
    plan = OldPlan.objects.create(request={"gpus": []}, result={"ok": True}, fingerprint="f" * 64, state="applied")
    deployment = OldDeployment.objects.create(name="kept", profile=profile, replicas=1, state="running", plan=plan)
    OldSlot.objects.create(deployment=deployment, replica=0, partition=partition)
    op = Reconfiguration.objects.create(node=node, gpu=gpu, gpu_index=0, kind="compute", target_compute_mode="CPX",
                                        state="succeeded", plan=plan)
    deployment_type = OldContentType.objects.get_or_create(app_label="partitions", model="deployment")[0]
    add_deployment = OldPermission.objects.get_or_create(
        content_type=deployment_type, codename="add_deployment", defaults={"name": "Can add deployment"})[0]
    group = OldGroup.objects.create(name="upgrade-operators")
    group.permissions.add(add_deployment)

    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    from partitions.models import Reconfiguration as NewReconfiguration
    from planning.models import Plan
    from serving.models import Deployment

    moved = Deployment.objects.select_related("plan").get(name="kept")
    assert (moved.pk, moved.state, moved.plan.pk) == (deployment.pk, "running", plan.pk)
    assert [(s.replica, s.partition_id) for s in moved.slots.all()] == [(0, partition.pk)]
    assert Plan.objects.get(pk=plan.pk).state == "applied"
    assert NewReconfiguration.objects.get(pk=op.pk).plan_id == plan.pk
    assert ContentType.objects.get_for_model(Deployment).pk == deployment_type.pk
    granted = Group.objects.get(name="upgrade-operators").permissions.get()
    assert (granted.pk, granted.content_type.app_label, granted.codename) == (add_deployment.pk, "serving", "add_deployment")
    assert not Permission.objects.filter(content_type__app_label="partitions", codename="add_deployment").exists()
