import pytest

from metrics import purges
from metrics.models import Metric, MetricPoint, MetricPurge, RollupHour, Series

pytestmark = pytest.mark.django_db


def test_metric_list_shows_type_and_series_count_and_searches(admin_client_logged, api_client):
    for host in ("a", "b"):
        api_client.post(
            "/api/metrics/counter", {"name": "web.hits", "tags": {"host": host}}, format="json"
        )
    api_client.post("/api/metrics/value", {"name": "cpu", "value": 1}, format="json")
    page = admin_client_logged.get("/admin/metrics/metric/", {"q": "web"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "web.hits" in html and "cpu" not in html
    assert '<td class="field-series_count">2</td>' in html
    detail = admin_client_logged.get(
        f"/admin/metrics/metric/{Metric.objects.get(name='web.hits').pk}/change/"
    )
    assert detail.status_code == 200
    assert "host" in detail.content.decode()


def test_delete_action_removes_points_rollups_and_series(admin_client_logged, api_client):
    api_client.post("/api/metrics/counter", {"name": "gone", "tags": {"k": "v"}}, format="json")
    api_client.post("/api/metrics/counter", {"name": "kept"}, format="json")
    gone = Metric.objects.get(name="gone")
    response = admin_client_logged.post(
        "/admin/metrics/metric/",
        {"action": "delete_with_data", "_selected_action": [gone.pk]},
    )
    assert response.status_code == 302
    assert list(Metric.objects.values_list("name", flat=True)) == ["kept"]
    purge = MetricPurge.objects.get()  # the rows go with the purge, as a worker runs it
    assert purge.name == "gone"
    assert purges.purge_run(purge_id=purge.pk)
    assert MetricPoint.objects.count() == 1
    assert Series.objects.count() == 1
    assert RollupHour.objects.count() == 1
