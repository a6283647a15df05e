"""One agent per node, with real agent processes (``manage.py run_agent``) sharing the test
database and a real Redis."""

from __future__ import annotations

import pytest

from partitions.models import Node
from tests.emulated_nodes import make_emulated_node
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis, pytest.mark.slow]


def test_a_second_agent_for_a_node_refuses_to_start_and_touches_nothing(tmp_path, start_agent):
    make_emulated_node(tmp_path, "emu-two", gpus=2)
    first = start_agent("emu-two")
    holder = Node.objects.get(name="emu-two").agent_lease_holder
    assert holder.endswith(f":{first.proc.pid}")

    second = start_agent("emu-two", wait=False)
    wait_for(lambda: not second.alive(), 60, "the second agent to give up")
    assert second.proc.returncode != 0
    output = second.output()
    assert "refusing to start" in output and f"held by agent {holder}" in output, output
    assert "ready" not in output  # it never started a worker

    assert "holding node" not in output  # it never held the node, so it never read or changed the hardware

    assert first.alive()
    assert Node.objects.get(name="emu-two").agent_lease_holder == holder
