"""The admin's metric list columns, Explore page, chart page and its staff-only JSON view."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import escape

from metrics.models import Metric
from metrics.services import PointInput, points_ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def when():
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


def ingest(name, kind="counter", *points):
    points_ingest(points=[PointInput(kind, name, *p) for p in points])


def test_metric_list_shows_series_last_point_and_a_chart_link(admin_client_logged, when):
    ingest("web.hits", "counter", (1, when, {"host": "a"}), (1, when, {"host": "b"}))
    Metric.objects.create(name="idle", type="value")
    html = admin_client_logged.get("/admin/metrics/metric/").content.decode()
    metric = Metric.objects.get(name="web.hits")
    assert '<td class="field-series_count">2</td>' in html
    assert '<td class="field-series_count">0</td>' in html
    chart = reverse("admin:metrics_metric_chart", args=[metric.pk])
    assert f'<a href="{chart}">chart</a>' in html
    # As the admin shows a datetime (at a whole hour "3 p.m.", else "3:07 p.m."), HTML-escaped.
    shown = formats.localize(timezone.template_localtime(when))
    assert escape(shown) in html
    assert reverse("admin:metrics_metric_explore") in html
    # Sorting by the new columns works (they are annotations, not Python).
    for order in ("-4", "5", "-5"):
        assert admin_client_logged.get("/admin/metrics/metric/", {"o": order}).status_code == 200


def test_explore_lists_metrics_with_search_and_pages(admin_client_logged, when):
    Metric.objects.bulk_create([Metric(name=f"m.{i:03d}", type="counter") for i in range(55)])
    ingest("web.hits", "counter", (1, when, {}))
    page = admin_client_logged.get("/admin/metrics/metric/explore/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('class="gf-chart-link"') == 50
    next_link = re.search(r'href="\?([^"]+)">Next page', html).group(1)
    second = admin_client_logged.get(
        "/admin/metrics/metric/explore/?" + next_link.replace("&amp;", "&")
    )
    assert second.content.decode().count('class="gf-chart-link"') == 6
    found = admin_client_logged.get(
        "/admin/metrics/metric/explore/", {"q": "HITS"}
    ).content.decode()
    metric = Metric.objects.get(name="web.hits")
    assert reverse("admin:metrics_metric_chart", args=[metric.pk]) in found
    assert found.count('class="gf-chart-link"') == 1
    assert (
        "No metric matches"
        in admin_client_logged.get("/admin/metrics/metric/explore/", {"q": "zz"}).content.decode()
    )
    # A bad cursor is ignored rather than an error page.
    assert (
        admin_client_logged.get("/admin/metrics/metric/explore/", {"cursor": "!!"}).status_code
        == 200
    )


def test_chart_page_loads_only_its_own_static_files_and_no_inline_script(admin_client_logged, when):
    ingest("web.hits", "counter", (1, when, {"host": "a", "dc": "eu"}))
    metric = Metric.objects.get(name="web.hits")
    page = admin_client_logged.get(reverse("admin:metrics_metric_chart", args=[metric.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts), scripts
    assert "/static/metrics/chart.js" in html
    assert "/static/metrics/vendor/uplot/uPlot.iife.min.js" in html
    assert ' style="' not in html.split('id="content-main"')[1]
    config = json.loads(re.search(r'data-config="([^"]+)"', html).group(1).replace("&quot;", '"'))
    assert config["aggregations"][0] == "sum" and "rate" in config["aggregations"]
    assert config["tags"] == {"dc": ["eu"], "host": ["a"]}
    assert config["dataUrl"] == reverse("admin:metrics_metric_chart_data", args=[metric.pk])


def test_a_value_metric_offers_avg_first_and_no_rate(admin_client_logged, when):
    ingest("cpu", "value", (0.5, when, {}))
    metric = Metric.objects.get(name="cpu")
    html = admin_client_logged.get(
        reverse("admin:metrics_metric_chart", args=[metric.pk])
    ).content.decode()
    options = re.findall(
        r'<option value="([a-z0-9]+)">\1</option>', html.split("gf-aggregation")[1]
    )
    assert options[0] == "avg" and "rate" not in options


def test_chart_data_answers_as_the_query_api_for_staff_only(
    admin_client_logged, client, when, api_client
):
    ingest("a/b", "counter", (2, when, {"host": "a"}), (3, when, {"host": "b"}))
    metric = Metric.objects.get(name="a/b")
    url = reverse("admin:metrics_metric_chart_data", args=[metric.pk])
    params = {
        "from": (when - timedelta(hours=1)).isoformat(),
        "to": (when + timedelta(hours=1)).isoformat(),
    }
    mine = admin_client_logged.get(url, {**params, "group_by": "host"})
    assert mine.status_code == 200
    api = api_client.get("/api/metrics/a/b", {**params, "group_by": "host"})
    assert mine.json() == api.json()
    bad = admin_client_logged.get(url, {"interval": "week"})
    assert bad.status_code == 400 and bad["Content-Type"] == "application/problem+json"
    assert (
        admin_client_logged.get(
            reverse("admin:metrics_metric_chart_data", args=[999999])
        ).status_code
        == 404
    )
    admin_client_logged.logout()
    # Not logged in: the admin sends the browser to its login page.
    assert client.get(url).status_code == 302


def test_staff_without_the_view_permission_gets_no_chart(client, when):
    ingest("secret", "counter", (1, when, {}))
    metric = Metric.objects.get(name="secret")
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    chart = reverse("admin:metrics_metric_chart", args=[metric.pk])
    data = reverse("admin:metrics_metric_chart_data", args=[metric.pk])
    assert client.get(chart).status_code == 403
    assert client.get(data).status_code == 403
    assert client.get(reverse("admin:metrics_metric_explore")).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_metric"))
    client.force_login(User.objects.get(pk=user.pk))
    assert client.get(chart).status_code == 200
    assert client.get(data).status_code == 200
