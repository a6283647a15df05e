"""The dashboard's longer ranges from a real Prometheus (Debian's binary, as
tests/observability): it scrapes a tiny exporter of the console's metric families, then
/dashboard/history/ answers bounded, aggregated series."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from partitions import history
from partitions.aggregate import Scope
from tests.observability.conftest import prometheus_bin  # noqa: F401  (fixture)
from tests.processes import free_port, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def exposition(nodes: int = 15) -> bytes:
    lines = []
    for n in range(nodes):
        for g in range(2):
            L = f'node="sim-{n}",gpu="{g}",emulated="true"'
            lines.append(f'aim_gpu_power_watts{{{L}}} {300 + n}')
            lines.append(f'aim_gpu_temperature_celsius{{{L},sensor="hotspot"}} {50 + n}')
            for p in range(2):
                P = f'{L},partition="{p}"'
                lines.append(f'aim_partition_gfx_activity_ratio{{{P},derived="true"}} {(n * 7 + p) % 100 / 100}')
                lines.append(f'aim_partition_memory_used_bytes{{{P}}} {2**30 * (1 + p)}')
                lines.append(f'aim_partition_memory_total_bytes{{{P}}} {24 * 2**30}')
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def prometheus(prometheus_bin, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    import urllib.request

    from tests.observability.test_prometheus_e2e import start_prometheus

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc, prom = start_prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{server.server_address[1]}")
    try:
        wait_for(lambda: bool(prom.vector("count_over_time(aim_gpu_power_watts[5m])"))
                 and float(prom.vector("count_over_time(aim_gpu_power_watts[5m])")[0]["value"][1]) >= 3,
                 60, "three scrapes", interval=0.5)
        assert urllib.request.urlopen(f"{prom.url}/-/ready").status == 200
        yield prom.url
    finally:
        proc.stop()
        server.shutdown()


def test_history_endpoint_returns_bounded_series_from_prometheus(prometheus, client, viewer, settings):
    from partitions.models import Node

    settings.PROMETHEUS_URL = prometheus
    client.force_login(viewer)
    answer = client.get("/dashboard/history/?range=15m").json()
    assert answer["range"] == "15m" and answer["level"] == "node" and answer["step_s"] == 4
    activity = answer["charts"]["activity"]
    assert len(activity) == 12  # 15 nodes: the 12 busiest
    assert all(len(s["x"]) == len(s["y"]) and s["y"] for s in activity)
    assert all(0 <= v <= 100 for s in activity for v in s["y"])
    assert {s["key"] for s in answer["charts"]["power"]} <= {f"sim-{n}" for n in range(15)}
    vram = answer["charts"]["vram"][0]["y"][-1]
    assert vram == pytest.approx(100 * 6 / 96, abs=0.01)  # % of the node's total
    Node.objects.create(name="sim-3")
    gpu = client.get("/dashboard/history/?range=1h&node=sim-3&gpu=1").json()
    assert gpu["level"] == "partition"
    assert sorted(s["key"] for s in gpu["charts"]["activity"]) == ["sim-3|1|0", "sim-3|1|1"]
    assert [s["label"] for s in gpu["charts"]["power"]] == ["sim-3 g1"]
    assert gpu["charts"]["vram"][0]["y"][-1] in (1.0, 2.0)  # GiB per partition
    assert len(json.dumps(answer)) < 200_000
    assert client.get("/dashboard/history/?range=2d").status_code == 400


def test_prometheus_unreachable_is_a_502_with_the_reason(client, viewer, settings):
    settings.PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"
    client.force_login(viewer)
    response = client.get("/dashboard/history/?range=1h")
    assert response.status_code == 502 and "unreachable" in response.json()["error"]


def test_queries_escape_label_values_and_limit_series():
    q = history.queries(Scope(node='we"ird\\'), limit=5)
    assert 'node="we\\"ird\\\\"' in q["activity"] and q["activity"].startswith("topk(5,")
    assert history.step_for(24 * 3600) == 360  # 240 steps at most
