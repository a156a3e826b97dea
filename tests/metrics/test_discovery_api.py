"""GET /api/metrics, /api/series, /api/tags: shapes, filters, cursor pages and every error."""

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command

from metrics import discovery
from metrics.models import Metric
from metrics.services import PointInput, points_ingest
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(make_api_client):
    return make_api_client(scopes=["read"])


@pytest.fixture
def now():
    return datetime.now(UTC).replace(second=0, microsecond=0)


def ingest(*points):
    """points: (type, name, value, when[, tags])."""
    points_ingest(points=[PointInput(*p) for p in points])


def ok(response):
    assert response.status_code == 200, response.content
    return response.json()


def names(body):
    return [row["name"] for row in body["results"]]


def make_metrics(names_, kind="counter"):
    Metric.objects.bulk_create([Metric(name=n, type=kind) for n in names_])


def walk(client, path, params):
    """Every page from the first to next=null: (rows, number of pages)."""
    rows, pages = [], 0
    response = client.get(path, params)
    while True:
        body = ok(response)
        rows += body["results"]
        pages += 1
        if body["next"] is None:
            return rows, pages
        assert urlsplit(body["next"]).path == path
        response = client.get(body["next"])


# --- GET /api/metrics -----------------------------------------------------------------------


def test_metrics_list_shows_type_series_count_and_the_minute_of_the_last_point(reader, now):
    last = now - timedelta(hours=3, seconds=-17)  # 17 s into its minute
    ingest(
        ("counter", "web.hits", 1, now - timedelta(days=2), {"host": "a"}),
        ("counter", "web.hits", 1, last, {"host": "b"}),
        ("value", "cpu", 0.5, now - timedelta(days=1)),
    )
    Metric.objects.create(name="empty", type="value")
    body = ok(reader.get("/api/metrics"))
    assert body["next"] is None
    by_name = {row["name"]: row for row in body["results"]}
    assert names(body) == ["cpu", "empty", "web.hits"]
    hits = by_name["web.hits"]
    assert hits["type"] == "counter" and hits["series"] == 2
    minute = last.replace(second=0)
    assert datetime.fromisoformat(hits["last_point_at"]) == minute
    assert datetime.fromisoformat(hits["created_at"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(by_name["cpu"]["last_point_at"]) == now - timedelta(days=1)
    assert by_name["empty"] == {**by_name["empty"], "series": 0, "last_point_at": None}


def test_last_point_at_falls_back_to_the_hour_when_its_minutes_have_expired(reader, now):
    from django.db import connection

    ingest(("counter", "old", 1, now - timedelta(hours=2)))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM metric_rollup_minute")  # as retention drops them first
    [row] = ok(reader.get("/api/metrics"))["results"]
    hour = (now - timedelta(hours=2)).replace(minute=0)
    assert datetime.fromisoformat(row["last_point_at"]) == hour


def test_pages_follow_the_cursor_to_the_end_without_duplicates_or_gaps(reader):
    expected = sorted(f"m.{i:03d}" for i in range(25))
    make_metrics(expected)
    rows, pages = walk(reader, "/api/metrics", {"limit": 10})
    assert [r["name"] for r in rows] == expected
    assert pages == 3


def test_metrics_created_while_paging_never_cause_a_duplicate_or_a_gap(reader):
    existing = [f"b.{i:03d}" for i in range(0, 60, 2)]
    make_metrics(existing)
    seen = []
    created = 0
    response = reader.get("/api/metrics", {"limit": 7})
    while True:
        body = ok(response)
        seen += names(body)
        # New names land before and after the cursor, and at the cursor's neighbours.
        cursor_name = seen[-1]
        make_metrics([f"a.{created}", f"{cursor_name}x", f"z.{created}"])
        created += 1
        if body["next"] is None:
            break
        response = reader.get(body["next"])
    assert len(seen) == len(set(seen)), "a metric was returned twice"
    assert set(existing) <= set(seen), "a metric that existed throughout was skipped"
    assert not any(name.startswith("a.") for name in seen)  # created behind the cursor


def test_a_metric_deleted_at_the_cursor_does_not_break_the_next_page(reader, make_api_client):
    make_metrics(["a", "b", "c", "d"])
    first = ok(reader.get("/api/metrics", {"limit": 2}))
    assert names(first) == ["a", "b"]
    Metric.objects.filter(name="b").delete()
    assert names(ok(reader.get(first["next"]))) == ["c", "d"]


def test_next_keeps_the_filters_and_the_limit(reader):
    make_metrics([f"web.{i}" for i in range(5)] + ["other"])
    body = ok(reader.get("/api/metrics", {"prefix": "web.", "limit": 2}))
    query = parse_qs(urlsplit(body["next"]).query)
    assert query["prefix"] == ["web."] and query["limit"] == ["2"] and query["cursor"]
    rows, pages = walk(reader, "/api/metrics", {"prefix": "web.", "limit": 2})
    assert [r["name"] for r in rows] == [f"web.{i}" for i in range(5)] and pages == 3


def test_search_is_a_case_insensitive_substring_with_no_wildcards(reader):
    make_metrics(["CPU_load", "cpuXload", "disk.cpu", "mem", "100%", "1000"])
    found = names(ok(reader.get("/api/metrics", {"search": "cpu"})))
    assert sorted(found) == sorted(["CPU_load", "cpuXload", "disk.cpu"])
    # _ and % are literal characters, not LIKE wildcards.
    assert names(ok(reader.get("/api/metrics", {"search": "u_l"}))) == ["CPU_load"]
    assert names(ok(reader.get("/api/metrics", {"search": "0%"}))) == ["100%"]
    assert names(ok(reader.get("/api/metrics", {"search": "nothing"}))) == []
    assert len(names(ok(reader.get("/api/metrics", {"search": "", "prefix": ""})))) == 6


def test_prefix_matches_the_start_of_the_name_case_sensitively(reader):
    make_metrics(["web.hits", "web.errors", "webby", "Web.x", "a.web.b", "web_x"])
    assert names(ok(reader.get("/api/metrics", {"prefix": "web."}))) == [
        "web.errors",
        "web.hits",
    ]
    assert names(ok(reader.get("/api/metrics", {"prefix": "web_"}))) == ["web_x"]


def test_type_filter_and_filters_combine(reader):
    make_metrics(["web.hits", "web.rps"], kind="counter")
    make_metrics(["web.latency", "db.latency"], kind="value")
    assert names(ok(reader.get("/api/metrics", {"type": "value"}))) == ["db.latency", "web.latency"]
    assert names(ok(reader.get("/api/metrics", {"type": "counter", "search": "RPS"}))) == [
        "web.rps"
    ]
    assert_problem(reader.get("/api/metrics", {"type": "gauge"}), 400, field="type")


def test_limit_defaults_to_100_and_accepts_1_to_1000(reader):
    make_metrics([f"m.{i:04d}" for i in range(1001)])
    body = ok(reader.get("/api/metrics"))
    assert len(body["results"]) == 100 and body["next"]
    one = ok(reader.get("/api/metrics", {"limit": 1}))
    assert names(one) == ["m.0000"] and one["next"]
    full = ok(reader.get("/api/metrics", {"limit": 1000}))
    assert len(full["results"]) == 1000
    assert names(ok(reader.get(full["next"]))) == ["m.1000"]
    for bad in ("0", "1001", "-1", "ten", ""):
        assert_problem(reader.get("/api/metrics", {"limit": bad}), 400, field="limit")


def test_exactly_one_page_of_rows_has_no_next(reader):
    make_metrics(["a", "b", "c"])
    assert ok(reader.get("/api/metrics", {"limit": 3}))["next"] is None
    assert ok(reader.get("/api/metrics", {"limit": 2}))["next"] is not None


@pytest.mark.parametrize(
    "cursor",
    ["not-base64!", "e30", discovery.cursor_encode(7), "", "W10", "WzEsMl0"],
    ids=["garbage", "object", "an-int-cursor", "empty", "empty-list", "two-values"],
)
def test_a_cursor_not_made_here_is_a_400(reader, cursor):
    assert_problem(reader.get("/api/metrics", {"cursor": cursor}), 400, field="cursor")


def test_unknown_and_repeated_parameters_are_refused(reader):
    assert_problem(reader.get("/api/metrics", {"offset": 10}), 400, field="offset")
    assert_problem(reader.get("/api/metrics?limit=1&limit=2"), 400, field="limit")
    assert_problem(reader.get("/api/metrics", {"search": "x" * 192}), 400, field="search")
    assert_problem(reader.get("/api/metrics", {"prefix": "x" * 192}), 400, field="prefix")
    assert ok(reader.get("/api/metrics", {"prefix": "x" * 191}))["results"] == []


# --- GET /api/series ------------------------------------------------------------------------


def test_series_lists_tag_sets_with_their_last_point_and_filters_by_tag(reader, now):
    ingest(
        ("counter", "hits", 1, now - timedelta(hours=5), {"host": "a", "dc": "eu"}),
        ("counter", "hits", 1, now - timedelta(hours=1), {"host": "b", "dc": "eu"}),
        ("counter", "hits", 1, now - timedelta(hours=2), {"host": "c", "dc": "us"}),
        ("counter", "hits", 1, now - timedelta(hours=2)),
        ("counter", "other", 1, now, {"host": "a"}),
    )
    body = ok(reader.get("/api/series", {"metric": "hits"}))
    assert body["next"] is None
    by_host = {row["tags"].get("host"): row for row in body["results"]}
    assert [row["tags"] for row in body["results"]] == [
        by_host[h]["tags"] for h in sorted(by_host, key=lambda h: by_host[h]["id"])
    ]
    assert {h: row["tags"] for h, row in by_host.items()} == {
        "a": {"dc": "eu", "host": "a"},
        "b": {"dc": "eu", "host": "b"},
        "c": {"dc": "us", "host": "c"},
        None: {},
    }
    last = {h: datetime.fromisoformat(row["last_point_at"]) for h, row in by_host.items()}
    assert last == {
        "a": now - timedelta(hours=5),
        "b": now - timedelta(hours=1),
        "c": now - timedelta(hours=2),
        None: now - timedelta(hours=2),
    }
    eu = ok(reader.get("/api/series", {"metric": "hits", "tag": "dc:eu"}))
    assert sorted(row["tags"]["host"] for row in eu["results"]) == ["a", "b"]
    both = ok(reader.get("/api/series?metric=hits&tag=dc:eu&tag=host:b"))
    assert [row["tags"]["host"] for row in both["results"]] == ["b"]
    assert ok(reader.get("/api/series?metric=hits&tag=host:a&tag=host:b"))["results"] == []


def test_series_pages_by_cursor(reader, now):
    ingest(*[("value", "v", 1, now, {"i": f"{i:02d}"}) for i in range(12)])
    rows, pages = walk(reader, "/api/series", {"metric": "v", "limit": 5})
    assert sorted(r["tags"]["i"] for r in rows) == [f"{i:02d}" for i in range(12)]
    assert pages == 3
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    # A metric-list cursor (a name) is not a series cursor (an id).
    bad = discovery.cursor_encode("v")
    assert_problem(reader.get("/api/series", {"metric": "v", "cursor": bad}), 400, field="cursor")


def test_series_of_an_unknown_metric_is_a_404_and_the_metric_is_required(reader):
    body = assert_problem(reader.get("/api/series", {"metric": "nope"}), 404)
    assert body["type"] == "urn:glowing-fiesta:problem:metric-not-found"
    assert_problem(reader.get("/api/series"), 400, field="metric")
    assert_problem(reader.get("/api/series", {"metric": "x", "tag": "nocolon"}), 400)


# --- GET /api/tags --------------------------------------------------------------------------


def test_tags_lists_every_key_with_its_values_in_order(reader, now):
    ingest(
        ("counter", "hits", 1, now, {"host": "b", "dc": "eu"}),
        ("counter", "hits", 1, now, {"host": "a", "dc": "eu"}),
        ("counter", "hits", 1, now, {"host": "a", "dc": "us", "path": "/x"}),
        ("counter", "hits", 1, now),
    )
    body = ok(reader.get("/api/tags", {"metric": "hits"}))
    assert body == {
        "metric": "hits",
        "keys": {"dc": ["eu", "us"], "host": ["a", "b"], "path": ["/x"]},
        "values_max": 100,
        "truncated": [],
    }


def test_tag_values_are_capped_at_100_per_key(reader, now):
    ingest(*[("counter", "c", 1, now, {"id": f"{i:03d}", "k": "v"}) for i in range(101)])
    body = ok(reader.get("/api/tags", {"metric": "c"}))
    assert body["keys"]["id"] == [f"{i:03d}" for i in range(100)]
    assert body["keys"]["k"] == ["v"]
    assert body["truncated"] == ["id"]
    ingest(*[("counter", "d", 1, now, {"id": f"{i:03d}"}) for i in range(100)])
    assert ok(reader.get("/api/tags", {"metric": "d"}))["truncated"] == []


def test_tags_of_an_unknown_metric_is_a_404(reader):
    assert_problem(reader.get("/api/tags", {"metric": "nope"}), 404)
    assert_problem(reader.get("/api/tags"), 400, field="metric")
    assert_problem(reader.get("/api/tags", {"metric": "a", "limit": 3}), 400, field="limit")


# --- keys and scopes ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/metrics", "/api/series?metric=m", "/api/tags?metric=m"])
def test_discovery_needs_a_key_with_the_read_scope(path, make_api_client, client_anon):
    make_metrics(["m"])
    assert_problem(client_anon.get(path), 401)
    for scopes in (["write"], ["admin"]):
        body = assert_problem(make_api_client(scopes=scopes).get(path), 403)
        assert body["type"] == "urn:glowing-fiesta:problem:insufficient-scope"
    assert make_api_client(scopes=["read"]).get(path).status_code == 200


def test_openapi_schema_lists_discovery_and_delete_with_their_errors(tmp_path):
    import yaml

    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    paths = yaml.safe_load(out.read_text())["paths"]
    for path in ("/api/metrics", "/api/series", "/api/tags"):
        get = paths[path]["get"]
        assert {"200", "400", "401", "403", "429"} <= set(get["responses"]), path
        params = {p["name"] for p in get["parameters"]}
        assert "limit" in params or path == "/api/tags"
    assert "404" in paths["/api/series"]["get"]["responses"]
    delete = paths["/api/metrics/{name}"]["delete"]
    assert {"204", "401", "403", "404"} <= set(delete["responses"])
    assert {"search", "prefix", "type", "cursor"} <= {
        p["name"] for p in paths["/api/metrics"]["get"]["parameters"]
    }
