"""The batch task, the sweeper and the admin retry, run in this process (task.apply)."""

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st
from kombu.exceptions import OperationalError as BrokerError

from apikeys.services import apikey_create
from glowing_fiesta.celery import app as celery_app
from glowing_fiesta.celery import beat_schedule
from metrics import packing
from metrics.batches import dispatch, process, sweep
from metrics.models import IngestBatch, MetricPoint, RollupDay, RollupHour, RollupMinute
from metrics.services import PointInput
from metrics.tasks import (
    batches_sweep_task,
    partitions_ensure_task,
    process_metric_batch,
)
from tests.helpers import post, post_async
from tests.processes import python_run, queued_batch_ids, worker_database_url

pytestmark = pytest.mark.django_db


def queue_points(client, points: list[dict]) -> int:
    response = post_async(client, "/api/metrics/batch", {"points": points})
    assert response.status_code == 202, response.content
    return response.json()["batch_id"]


def values(count: int, name: str = "load", **tags: str) -> list[dict]:
    return [{"type": "value", "name": name, "value": float(i), "tags": tags} for i in range(count)]


def run(batch_id: int) -> str:
    return process_metric_batch.apply(args=[batch_id]).get()


def test_task_writes_points_and_rollups_and_marks_the_batch_done(api_client):
    batch_id = queue_points(api_client, values(100, host="a") + values(3, name="other"))
    assert run(batch_id) == "done"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts, batch.error) == ("done", 1, "")
    assert batch.processed_at is not None and batch.claimed_at is not None
    assert MetricPoint.objects.count() == 103
    assert MetricPoint.objects.aggregate(total=Sum("value"))["total"] == sum(range(100)) + 3
    for rollup in (RollupMinute, RollupHour, RollupDay):
        assert rollup.objects.aggregate(n=Sum("count"))["n"] == 103
    status = api_client.get(f"/api/batches/{batch_id}").json()
    assert (status["state"], status["attempts"], status["error"]) == ("done", 1, None)
    assert status["processed_at"] is not None


def test_running_the_task_again_stores_nothing_twice(api_client):
    batch_id = queue_points(api_client, values(5))
    assert run(batch_id) == "done"
    assert run(batch_id) == "skipped"
    assert MetricPoint.objects.count() == 5
    assert RollupDay.objects.aggregate(n=Sum("count"))["n"] == 5
    assert IngestBatch.objects.get().attempts == 1


def test_a_vanished_batch_is_skipped():
    assert run(123456) == "skipped"


def test_type_conflict_since_validation_fails_the_batch_at_once(api_client):
    batch_id = queue_points(api_client, [{"type": "counter", "name": "jobs"}])
    assert post(api_client, "/api/metrics/value", {"name": "jobs", "value": 2}).status_code == 201
    assert run(batch_id) == "failed"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts) == ("failed", 1)
    assert "Metric type conflict" in batch.error and "'jobs' is a value" in batch.error
    assert MetricPoint.objects.count() == 1  # the synchronous point only
    assert api_client.get(f"/api/batches/{batch_id}").json()["error"] == batch.error


def test_series_limit_reached_since_validation_fails_the_batch(api_client, settings):
    settings.METRIC_MAX_SERIES = 2
    batch_id = queue_points(
        api_client, [{"type": "counter", "name": "c", "tags": {"n": str(i)}} for i in range(3)]
    )
    assert run(batch_id) == "failed"
    assert "Too many series" in IngestBatch.objects.get().error
    assert MetricPoint.objects.count() == 0


@pytest.fixture
def metrics_table_locked():
    """Another session holds a lock that blocks every insert into `metrics` until teardown."""
    with psycopg.connect(worker_database_url()) as other:
        other.execute("SET lock_timeout = '5s'")
        other.execute("LOCK TABLE metrics IN EXCLUSIVE MODE")
        yield
        other.rollback()


def test_transient_errors_are_retried_until_the_batch_fails_with_its_error(
    api_client, settings, metrics_table_locked
):
    settings.QUEUE_MAX_ATTEMPTS = 3
    batch_id = queue_points(api_client, values(2, name="fresh"))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '50ms'")
    # apply() runs each retry at once, in this process, instead of after the backoff.
    assert run(batch_id) == "failed"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts) == ("failed", 3)
    assert batch.error.startswith("OperationalError: ")
    assert "statement timeout" in batch.error
    assert MetricPoint.objects.count() == 0


def test_a_lock_not_granted_does_not_use_up_the_attempts(api_client, metrics_table_locked):
    """The database refused nothing about the batch: a 202 is kept however long a lock lasts."""
    batch_id = queue_points(api_client, values(1, name="fresh"))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '50ms'")
    for _ in range(3):
        run_ = process.outbox_process(batch_id=batch_id, now=timezone.now())
        assert run_.result == "retry"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts) == ("pending", 0)
    assert "lock timeout" in batch.error


@pytest.fixture
def points_table_locked():
    """Another session holds metric_points until teardown: writes of known series block on it
    in the write path's own raw psycopg statements (COPY and the server-bound upsert)."""
    with psycopg.connect(worker_database_url()) as other:
        other.execute("LOCK TABLE metric_points IN ACCESS EXCLUSIVE MODE")
        yield
        other.rollback()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("count", [1, 100], ids=["one-statement", "copy"])
def test_a_lock_timeout_in_the_raw_write_path_is_retried_not_failed(
    api_client, count, request, clean_point_tables
):
    # The metric and series exist (committed and cached) before the lock is taken.
    assert post(api_client, "/api/metrics/value", {"name": "known", "value": 1}).status_code == 201
    batch_id = queue_points(api_client, [{"type": "value", "name": "known", "value": 2}] * count)
    request.getfixturevalue("points_table_locked")
    # Waits DB_LOCK_TIMEOUT_MS for the lock, then gives up with a lock timeout.
    run_ = process.outbox_process(batch_id=batch_id, now=timezone.now())
    assert run_.result == "retry", run_
    batch = IngestBatch.objects.get()
    # Given back: a lock not granted says nothing about the batch.
    assert (batch.state, batch.attempts) == ("pending", 0)
    assert "lock timeout" in batch.error


def test_transient_error_puts_the_batch_back_to_pending_with_its_error(
    api_client, metrics_table_locked
):
    batch_id = queue_points(api_client, values(1, name="fresh"))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '50ms'")
    run_ = process.outbox_process(batch_id=batch_id, now=timezone.now())
    assert run_.result == "retry"
    assert 1 <= run_.retry_in <= process.RETRY_BACKOFF_SECONDS
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts) == ("pending", 1)
    assert "statement timeout" in batch.error


def test_retry_delay_grows_exponentially_and_is_capped():
    assert 1 <= process.retry_delay(1) <= 2
    assert 4 <= process.retry_delay(3) <= 8
    assert 30 <= process.retry_delay(20) <= process.RETRY_BACKOFF_MAX_SECONDS


def test_a_running_batch_nobody_holds_is_taken_over(api_client):
    """Its worker died mid-batch: the row is marked running, but no transaction holds it."""
    batch_id = queue_points(api_client, values(4))
    IngestBatch.objects.filter(pk=batch_id).update(
        state="running", attempts=1, claimed_at=timezone.now()
    )
    assert run(batch_id) == "done"
    assert IngestBatch.objects.get().attempts == 2
    assert MetricPoint.objects.count() == 4


def test_an_old_claim_cannot_finish_a_batch_taken_over(api_client):
    batch_id = queue_points(api_client, values(1))
    IngestBatch.objects.filter(pk=batch_id).update(state="running", attempts=2)
    assert process._end(batch_id, 1, "done", error="", now=timezone.now()) == 0
    assert IngestBatch.objects.get().state == "running"


def test_a_batch_whose_every_attempt_died_is_failed_when_claimed_again(api_client, settings):
    settings.QUEUE_MAX_ATTEMPTS = 2
    batch_id = queue_points(api_client, values(1))
    IngestBatch.objects.filter(pk=batch_id).update(
        state="running", attempts=2, claimed_at=timezone.now() - timedelta(hours=1)
    )
    assert run(batch_id) == "failed"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts) == ("failed", 2)
    assert batch.error.startswith("Gave up after 2 attempts")
    assert MetricPoint.objects.count() == 0


def make_batch(state: str, *, age: timedelta, claim_age: timedelta | None = None, **fields):
    key, _ = apikey_create(name="sweep", scopes=["write"], rate_limit=10)
    now = timezone.now()
    return IngestBatch.objects.create(
        api_key=key,
        state=state,
        payload=[],
        points=0,
        created_at=now - age,
        updated_at=now - age,
        claimed_at=now - claim_age if claim_age is not None else None,
        **fields,
    )


def test_sweeper_sends_again_stale_pending_and_abandoned_running_batches_only(
    settings, queue_name, django_capture_on_commit_callbacks
):
    stale = timedelta(seconds=settings.QUEUE_STALE_SECONDS + 1)
    fresh = timedelta(seconds=1)
    old_pending = make_batch("pending", age=stale)
    make_batch("pending", age=fresh)
    # Running, untouched for as long, and locked by no attempt: its worker died (a live one
    # holds the row while it writes: see the next test).
    abandoned = make_batch("running", age=stale, claim_age=stale)
    make_batch("running", age=fresh, claim_age=fresh)
    make_batch("done", age=stale, claim_age=stale)
    make_batch("failed", age=stale, claim_age=stale)
    with django_capture_on_commit_callbacks(execute=True):
        assert batches_sweep_task.apply().get() == 2
    assert sorted(queued_batch_ids(queue_name)) == sorted([old_pending.pk, abandoned.pk])
    # Sent at most once per QUEUE_STALE_SECONDS: an immediate second sweep sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        assert batches_sweep_task.apply().get() == 0
    # A sweep "now" in the future sees every unfinished batch as stale.
    later = timezone.now() + stale + stale
    with django_capture_on_commit_callbacks(execute=True):
        assert batches_sweep_task.apply(kwargs={"now": later.isoformat()}).get() == 4


@pytest.mark.django_db(transaction=True)
def test_a_batch_being_written_by_a_live_attempt_is_neither_claimed_nor_swept(
    api_client, queue_name, clean_point_tables
):
    batch_id = queue_points(api_client, values(1))
    long_ago = timezone.now() - timedelta(hours=1)
    IngestBatch.objects.filter(pk=batch_id).update(
        state="running", attempts=1, claimed_at=long_ago, updated_at=long_ago
    )
    with psycopg.connect(worker_database_url()) as other:
        # What a live attempt holds while it writes the points.
        other.execute("SELECT id FROM ingest_batches WHERE id = %s FOR UPDATE", [batch_id])
        assert run(batch_id) == "skipped"
        assert sweep.outbox_sweep(now=timezone.now()) == []
        other.rollback()
    assert IngestBatch.objects.get().attempts == 1
    assert sweep.outbox_sweep(now=timezone.now()) == [batch_id]
    assert run(batch_id) == "done"
    assert MetricPoint.objects.count() == 1


def test_admin_lists_batches_and_retry_action_requeues_failed_ones(
    admin_client_logged, queue_name, django_capture_on_commit_callbacks
):
    failed = make_batch("failed", age=timedelta(hours=1), attempts=5, error="Boom: lost")
    done = make_batch("done", age=timedelta(hours=1), attempts=1)
    page = admin_client_logged.get("/admin/metrics/ingestbatch/", {"state": "failed"})
    assert page.status_code == 200
    html = page.content.decode()
    assert f"/admin/metrics/ingestbatch/{failed.pk}/change/" in html
    assert f"/admin/metrics/ingestbatch/{done.pk}/change/" not in html
    assert (
        admin_client_logged.get(f"/admin/metrics/ingestbatch/{failed.pk}/change/").status_code
        == 200
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_logged.post(
            "/admin/metrics/ingestbatch/",
            {"action": "retry", "_selected_action": [failed.pk, done.pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert "1 batch(es) queued again; 1 skipped" in response.content.decode()
    failed.refresh_from_db()
    assert (failed.state, failed.attempts, failed.error) == ("pending", 0, "Boom: lost")
    assert IngestBatch.objects.get(pk=done.pk).state == "done"
    assert queued_batch_ids(queue_name) == [failed.pk]


def test_retried_batch_is_processed_to_done(api_client, settings):
    settings.QUEUE_MAX_ATTEMPTS = 1
    batch_id = queue_points(api_client, values(2))
    IngestBatch.objects.filter(pk=batch_id).update(state="failed", attempts=1, error="x")
    assert sweep.outbox_retry(batch_ids=[batch_id], now=timezone.now()) == [batch_id]
    assert run(batch_id) == "done"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts, batch.error) == ("done", 1, "")


def test_partitions_ensure_task_creates_the_days_ahead():
    ahead = (datetime.now(UTC) + timedelta(days=8)).strftime("%Y%m%d")
    assert partitions_ensure_task.apply().get() >= 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f"metric_points_{ahead}"])
        assert cursor.fetchone()[0] is not None


def test_beat_runs_the_sweeper_every_30_seconds_and_the_tasks_exist(settings):
    schedule = beat_schedule(settings)
    assert schedule["metrics-batches-sweep"]["task"] == "metrics.batches_sweep"
    assert schedule["metrics-batches-sweep"]["schedule"] == 30.0
    for entry in schedule.values():
        if entry["task"].startswith("metrics."):
            assert entry["task"] in celery_app.tasks
    assert "metrics.ProcessMetricBatch" in celery_app.tasks


def test_celery_is_configured_not_to_lose_tasks():
    conf = celery_app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_ignore_result
    hard_limits = [conf.task_time_limit, process_metric_batch.time_limit]
    assert conf.broker_transport_options["visibility_timeout"] > max(hard_limits)
    assert process_metric_batch.soft_time_limit < process_metric_batch.time_limit


def test_a_batch_that_cannot_be_read_fails_with_the_error(api_client):
    batch_id = queue_points(api_client, values(1))
    IngestBatch.objects.filter(pk=batch_id).update(packed=b"\x07garbage")
    assert run(batch_id) == "failed"
    batch = IngestBatch.objects.get()
    assert (batch.state, batch.attempts) == ("failed", 1)
    assert batch.error.startswith("error: unpack_from requires a buffer")


def test_a_batch_queued_as_json_before_packing_is_still_written(api_client):
    key = api_client.api_key
    now = timezone.now()
    batch = IngestBatch.objects.create(
        api_key=key, state="pending", points=2, created_at=now, updated_at=now,
        payload=[
            {"type": "value", "name": "old", "value": 1.5, "timestamp": now.isoformat(), "tags": {}},
            {"type": "counter", "name": "old.c", "value": 2.0, "timestamp": now.isoformat(),
             "tags": {"h": "a"}},
        ],
    )  # fmt: skip
    assert run(batch.pk) == "done"
    assert sorted(MetricPoint.objects.values_list("value", flat=True)) == [1.5, 2.0]


@given(
    points=st.lists(
        st.builds(
            PointInput,
            type=st.sampled_from(["counter", "value"]),
            name=st.sampled_from(["a", "b.c", "ünï"]),
            value=st.floats(allow_nan=False, allow_infinity=False, width=64),
            timestamp=st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(UTC),
            ),
            tags=st.dictionaries(st.sampled_from(["h", "z"]), st.text(min_size=1, max_size=5)),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_packed_points_round_trip_exactly(points):
    assert packing.points_unpack(packing.points_pack(points)) == points


def test_a_202_is_answered_when_the_broker_is_down_and_the_sweeper_sends_it_later(
    api_client, queue_name, settings, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_async(api_client, "/api/metrics/counter", {"name": "n"})
    assert response.status_code == 202
    batch_id = response.json()["batch_id"]
    assert "batch not enqueued; the sweeper will retry" in caplog.text
    assert IngestBatch.objects.get().state == "pending"
    monkeypatch.undo()
    later = timezone.now() + timedelta(seconds=settings.QUEUE_STALE_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep.outbox_sweep(now=later) == [batch_id]
    assert queued_batch_ids(queue_name) == [batch_id]


def test_after_a_broker_failure_requests_skip_the_broker_for_a_while(
    api_client, queue_name, monkeypatch, django_capture_on_commit_callbacks
):
    sends = []

    def broker_down(*args, **kwargs):
        sends.append(args)
        raise BrokerError("Timeout reading from socket")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            response = post_async(api_client, "/api/metrics/counter", {"name": "n"})
        assert response.status_code == 202
    assert len(sends) == 1  # one timeout paid; the next two did not wait on the broker
    monkeypatch.undo()
    assert IngestBatch.objects.filter(state="pending").count() == 3
    monkeypatch.setattr(dispatch, "_broker_paused_until", time.monotonic() - 1)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_async(api_client, "/api/metrics/counter", {"name": "n"})
    assert queued_batch_ids(queue_name) == [response.json()["batch_id"]]


@pytest.mark.parametrize(("debug", "refused"), [("false", True), ("true", False)])
def test_the_test_delay_is_refused_outside_debug(debug, refused):
    result = python_run(
        "import django; django.setup()",
        DJANGO_DEBUG=debug,
        DJANGO_SECRET_KEY="s" * 50,
        API_KEY_PEPPER="p" * 50,
        QUEUE_TEST_DELAY_SECONDS="5",
    )
    assert (result.returncode != 0) == refused, result.stderr
    assert ("QUEUE_TEST_DELAY_SECONDS is for tests only" in result.stderr) == refused


def test_a_worker_goes_on_with_every_pending_batch_and_the_abandoned_ones(
    api_client, settings, monkeypatch
):
    """The first message a worker gets is enough: after its own batch it writes every pending
    one (whose messages were coalesced into one, or lost with a flushed broker) and every claim
    abandoned by a killed worker, at its own pace, instead of one message per batch."""
    monkeypatch.setattr(process, "GROUP_POINTS", 2)  # one batch at a time: no companions
    ids = [queue_points(api_client, values(2, name=f"lost.{i}")) for i in range(6)]
    stale = timezone.now() - timedelta(seconds=settings.QUEUE_STALE_SECONDS + 1)
    # Claimed by a worker that died: not pending, so only the stale drain takes them over.
    IngestBatch.objects.filter(pk__in=ids[4:]).update(state="running", attempts=1, updated_at=stale)
    fresh = queue_points(api_client, values(2, name="fresh"))
    assert run(ids[0]) == "done"
    batches_ = {b.pk: b for b in IngestBatch.objects.all()}
    assert {pk: batches_[pk].state for pk in [*ids, fresh]} == dict.fromkeys([*ids, fresh], "done")
    assert [batches_[pk].attempts for pk in ids[4:]] == [2, 2]
    # One group per batch here, each in its own transaction.
    assert len({b.processed_at for b in batches_.values()}) == 7
    assert MetricPoint.objects.count() == 14
    # Their own messages, if any come, find them written.
    assert [run(pk) for pk in [*ids[1:], fresh]] == ["skipped"] * 6
    assert MetricPoint.objects.count() == 14


def test_a_deep_queue_is_written_in_groups_in_one_transaction(api_client):
    ids = [queue_points(api_client, values(3, name=f"deep.{i}")) for i in range(5)]
    assert run(ids[0]) == "done"
    batches_ = IngestBatch.objects.order_by("pk")
    assert [(b.state, b.attempts) for b in batches_] == [("done", 1)] * 5
    # One commit for all: the same processed_at.
    assert len({b.processed_at for b in batches_}) == 1
    assert MetricPoint.objects.count() == 15
    # The others' own messages find them done.
    assert [run(pk) for pk in ids[1:]] == ["skipped"] * 4
    assert MetricPoint.objects.count() == 15


def test_a_group_is_bounded_by_its_points(api_client, monkeypatch):
    monkeypatch.setattr(process, "GROUP_POINTS", 5)
    ids = [queue_points(api_client, values(2, name=f"g.{i}")) for i in range(4)]
    assert run(ids[0]) == "done"
    # Two groups of two batches (4 points each), each in one transaction: the task followed its
    # own group with the next.
    groups = list(IngestBatch.objects.order_by("pk").values_list("state", "processed_at"))
    assert [state for state, _ in groups] == ["done"] * 4
    assert groups[0][1] == groups[1][1] != groups[2][1] == groups[3][1]


def test_one_refused_batch_in_a_group_fails_alone(api_client):
    good = queue_points(api_client, values(2, name="fine"))
    bad = queue_points(api_client, values(1, name="clash"))
    also_good = queue_points(api_client, values(2, name="fine.too"))
    # Since it was accepted, "clash" became a counter: its batch can no longer be written.
    post(api_client, "/api/metrics/counter", {"name": "clash"})
    assert run(good) == "done"
    states = dict(IngestBatch.objects.values_list("pk", "state"))
    assert states == {good: "done", bad: "failed", also_good: "done"}
    assert "type conflict" in IngestBatch.objects.get(pk=bad).error.lower()
    assert MetricPoint.objects.filter(metric__name__startswith="fine").count() == 4


def test_a_burst_of_202s_sends_one_wake_up_and_its_task_writes_them_all(
    api_client, queue_name, monkeypatch, django_capture_on_commit_callbacks
):
    """While a wake-up is queued, more 202s send nothing; the task it starts clears the mark
    before its claims, writes every pending batch, and wakes one more worker when it finds
    more than its own."""
    monkeypatch.setattr(process, "GROUP_POINTS", 2)  # a group per batch, to follow them
    ids = []
    for i in range(4):
        with django_capture_on_commit_callbacks(execute=True):
            ids.append(queue_points(api_client, values(2, name=f"burst.{i}")))
    assert queued_batch_ids(queue_name) == [ids[0]]
    assert run(ids[0]) == "done"
    assert list(IngestBatch.objects.order_by("pk").values_list("state", flat=True)) == ["done"] * 4
    assert MetricPoint.objects.count() == 8
    # It found more than its own: one more wake-up, once it had claimed the next batch, for the
    # oldest one still pending (never for a batch it holds); the task it starts finds nothing
    # left to do.
    assert sorted(queued_batch_ids(queue_name)) == [ids[0], ids[2]]
    assert run(ids[2]) == "skipped"
    # Cleared by that task: the next 202 sends a wake-up of its own.
    with django_capture_on_commit_callbacks(execute=True):
        later = queue_points(api_client, values(2, name="later"))
    assert sorted(queued_batch_ids(queue_name)) == [ids[0], ids[2], later]
    assert run(later) == "done"
    assert MetricPoint.objects.count() == 10


def test_a_wake_up_that_could_not_be_sent_leaves_no_mark(
    api_client, queue_name, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        queue_points(api_client, values(2))
    monkeypatch.undo()
    dispatch.broker_pause_reset()
    with django_capture_on_commit_callbacks(execute=True):
        second = queue_points(api_client, values(2))
    # Not held back by a mark with no message behind it.
    assert queued_batch_ids(queue_name) == [second]
