"""``get_backend`` and the PARTITION_BACKEND setting (which implementation drives real nodes)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from partitions.backends import configured_backend, get_backend
from partitions.backends.amdsmi import AmdSmiBackend
from partitions.backends.simulated import SimulatedBackend


def test_without_a_kind_the_setting_decides(settings):
    settings.PARTITION_BACKEND = "simulated"
    assert isinstance(get_backend(gpu_count=2), SimulatedBackend)
    settings.PARTITION_BACKEND = "amdsmi"
    assert isinstance(get_backend(binary="/opt/rocm/bin/amd-smi"), AmdSmiBackend)


def test_the_setting_may_be_a_dotted_path(settings):
    settings.PARTITION_BACKEND = "partitions.backends.simulated.SimulatedBackend"
    backend = get_backend(gpu_count=3)
    assert isinstance(backend, SimulatedBackend) and len(backend.inventory().gpus) == 3
    assert configured_backend() == "partitions.backends.simulated.SimulatedBackend"


@pytest.mark.parametrize("value, problem", [
    ("nvidia", "not a known backend"),
    ("", "not a known backend"),
    ("partitions.backends.nothere.Backend", "cannot be imported"),
    ("partitions.backends.simulated.NoSuchClass", "cannot be imported"),
    ("collections.OrderedDict", "does not implement the Backend protocol"),
])
def test_a_bad_setting_is_improperly_configured(settings, value, problem):
    settings.PARTITION_BACKEND = value
    with pytest.raises(ImproperlyConfigured, match=problem) as info:
        get_backend()
    assert "PARTITION_BACKEND" in str(info.value)


@pytest.mark.django_db
def test_real_nodes_are_driven_by_the_configured_backend(settings):
    from partitions.models import GPU, Node
    from partitions.services import sync_node

    settings.PARTITION_BACKEND = "simulated"
    node = Node.objects.create(name="gpu-host-9", backend=Node.Backend.AMDSMI, backend_options={"gpu_count": 2})
    sync_node(node=node)
    assert GPU.objects.filter(node=node).count() == 2
    settings.PARTITION_BACKEND = "bogus"
    with pytest.raises(ImproperlyConfigured):
        sync_node(node=node)
