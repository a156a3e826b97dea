"""The figures: every label value bounded, never a key or a path."""

from __future__ import annotations

import pytest

from tests.processes import samples, scrape_text, value

DURATION_COUNT = "glowing_fiesta_request_duration_seconds_count"


ROUTE_NAMES = {
    "healthz", "readyz", "prometheus-metrics", "metric-counter", "metric-value", "metric-batch",
    "ingest-batch", "metric-query", "apikey-me", "unmatched",
}  # fmt: skip


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_no_label_holds_an_api_key_or_a_raw_path(stack):
    service = stack.serve(workers=1)
    secret = "s3cr3t-" + stack.write_key[3:11].lower()
    key = {"X-API-Key": stack.write_key}
    service.request("POST", "/api/metrics/counter", {"name": f"{secret}.name"}, **key)
    service.request("GET", f"/api/metrics/{secret}.name", **key)
    service.request("GET", f"/api/metrics/{secret}.missing", **key)
    service.request("GET", f"/no/such/{secret}/path")
    service.request("GET", f"/api/metrics/counter?api_key={stack.write_key}")
    service.request("GET", "/api/metrics/counter", Authorization=f"Bearer {stack.write_key}x")
    text = scrape_text(service, stack.read_key)
    assert stack.write_key not in text
    assert stack.read_key not in text
    assert stack.write_key[3:11] not in text  # not even the public prefix
    assert secret not in text
    assert "/no/such" not in text
    parsed = samples(text)
    routes = {
        dict(labels).get("route") for name, labels in parsed if name.startswith(DURATION_COUNT)
    }
    assert routes <= ROUTE_NAMES, routes
    assert "unmatched" in routes
    auth = "glowing_fiesta_auth_failures_total"
    assert value(parsed, auth, reason="in_url") == 1
    assert value(parsed, auth, reason="invalid") == 1
