"""The gateway's per-model traffic on the deployment's page: histogram quantiles, and the page
reading the counters the gateway flushes (a real Redis)."""

from __future__ import annotations

import pytest

from aimconsole import counters
from models.models import ModelProfile
from planning.services import DemandSpec
from serving.services import create_deployment
from serving.traffic import bucket_quantile, model_traffic


def test_bucket_quantiles_interpolate_inside_the_bucket_like_histogram_quantile():
    bounds = (0.1, 0.2, 0.4)
    assert bucket_quantile(0.5, bounds, [0, 0, 0, 0]) is None
    # 10 in (0, 0.1], 10 in (0.1, 0.2]: the median is the top of the first bucket, p75 halfway up the second.
    assert bucket_quantile(0.5, bounds, [10, 10, 0, 0]) == pytest.approx(0.1)
    assert bucket_quantile(0.75, bounds, [10, 10, 0, 0]) == pytest.approx(0.15)
    assert bucket_quantile(0.99, bounds, [0, 0, 0, 5]) == 0.4  # only +Inf: the highest finite bound


@pytest.mark.redis
@pytest.mark.django_db
def test_the_deployment_page_shows_what_the_gateway_measured_for_its_model(emulated, catalog, client, viewer, redis_url, settings):
    settings.REDIS_URL = redis_url
    profile = ModelProfile.objects.filter(model__hf_id="Qwen/Qwen2.5-0.5B-Instruct", gpu_model="MI300X").first()
    deployment = create_deployment(spec=DemandSpec(name="chat", profile=profile, replicas=1))
    client.force_login(viewer)
    assert b"No request for Qwen/Qwen2.5-0.5B-Instruct has gone through the gateway yet" in client.get(f"/deployments/{deployment.pk}/").content

    tally = counters.RequestTally()
    for ttft in (0.02, 0.02, 0.02, 0.3):
        tally.observe("ok", 0.6, ttft_s=ttft, prompt_tokens=5, generated_tokens=16)
    tally.observe("cancelled", 0.1)
    assert counters.record_request_tallies({(profile.model.hf_id, True): tally})

    (traffic,) = model_traffic(profile.model.hf_id)
    assert traffic.emulated and traffic.results == {"ok": 4, "error": 0, "cancelled": 1}
    assert traffic.ttft_p50_s is not None and 0.01 < traffic.ttft_p50_s <= 0.025
    assert (traffic.prompt_tokens, traffic.generated_tokens) == (20, 64)
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'id="traffic"' in page and "5 (4 / 0 / 1)" in page and "20 / 64" in page
