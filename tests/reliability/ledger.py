"""A client that keeps a ledger of every write it makes, and checks the ledger against the database.

Each logical write is one request body (one value point, or a batch of points) with its own
`Idempotency-Key`, sent again with the same key after a 5xx, a 409, a 429, a timeout or a broken
connection, until it gets a 2xx or another 4xx or its retry budget runs out. Write number `i`
carries the values `i * 1000 + j` (j < its point count) of one metric with no tags, so the rows
each write left in `metric_points` can be counted. The promise checked at the end:

- after a 2xx, the write's points are stored exactly once (a 202 once its batch is done);
- after a 4xx, none of them;
- a retry with the same key converges: no write is left unresolved;
- every error body the service sends is problem+json (never gunicorn's or Django's HTML).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import requests

METRIC = "fault.ledger"
PROBLEM = "application/problem+json"
VALUES_PER_WRITE = 1000


@dataclass
class Attempt:
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no HTTP answer (timeout, refused, reset)
    content_type: str = ""
    retry_after: str | None = None
    body: str = ""
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def describe(self) -> str:
        if self.status is None:
            return f"no answer after {self.seconds:.1f} s ({self.error})"
        retry = f", Retry-After {self.retry_after}" if self.retry_after else ""
        return (
            f"{self.status} {self.content_type or '(no content type)'}{retry} "
            f"after {self.seconds:.1f} s: {self.body[:110]!r}"
        )


@dataclass
class Write:
    number: int
    points: int
    respond_async: bool
    key: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex}")
    attempts: list[Attempt] = field(default_factory=list)
    batch_id: int | None = None

    @property
    def final(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def resolved(self) -> bool:
        final = self.final
        return final is not None and final.status is not None and not _retryable(final.status)

    @property
    def succeeded(self) -> bool:
        return self.resolved and 200 <= self.final.status < 300

    def describe(self) -> str:
        kind = "async" if self.respond_async else "sync"
        what = "point" if self.points == 1 else f"batch of {self.points}"
        return f"write #{self.number} ({kind} {what}, Idempotency-Key {self.key})"

    def body(self) -> tuple[str, dict]:
        values = [self.number * VALUES_PER_WRITE + j for j in range(self.points)]
        if self.points == 1:
            return "/api/metrics/value", {"name": METRIC, "value": values[0]}
        return "/api/metrics/batch", {
            "points": [{"type": "value", "name": METRIC, "value": v} for v in values]
        }


def _retryable(status: int) -> bool:
    return status >= 500 or status in (409, 429)


class Ledger:
    """Writes with retries, from any number of threads; every attempt is recorded."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry_for: float = 40.0,
        request_timeout: float = 35.0,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        # How long a client keeps retrying one write, counted from its first attempt.
        self.retry_for = retry_for
        # Longer than gunicorn's 30 s worker timeout, so its own answer, if any, is seen.
        self.request_timeout = request_timeout
        self.writes: list[Write] = []
        self.probes: list[Attempt] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    # --- sending ---------------------------------------------------------------------------

    def new_write(self, *, points: int = 1, respond_async: bool = False) -> Write:
        with self._lock:
            write = Write(next(self._numbers), points, respond_async)
            self.writes.append(write)
        return write

    def attempt(self, write: Write, *, timeout: float | None = None) -> Attempt:
        path, body = write.body()
        headers = {
            "X-API-Key": self.api_key,
            "Idempotency-Key": write.key,
            "Content-Type": "application/json",
        }
        if write.respond_async:
            headers["Prefer"] = "respond-async"
        started = time.monotonic()
        try:
            response = requests.post(
                self.base_url + path,
                data=json.dumps(body),
                headers=headers,
                timeout=timeout or self.request_timeout,
            )
        except requests.RequestException as exc:
            attempt = Attempt(started, time.monotonic(), None, error=type(exc).__name__)
        else:
            attempt = Attempt(
                started,
                time.monotonic(),
                response.status_code,
                response.headers.get("Content-Type", ""),
                response.headers.get("Retry-After"),
                response.text[:2000],
            )
            if response.status_code == 202:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    write.batch_id = int(response.json()["batch_id"])
        write.attempts.append(attempt)
        return attempt

    def send(self, write: Write) -> Write:
        """Send until resolved or the retry budget is spent; honour Retry-After up to 2 s."""
        first = time.monotonic()
        while True:
            attempt = self.attempt(write)
            if write.resolved or time.monotonic() - first > self.retry_for:
                return write
            delay = 0.25
            with contextlib.suppress(TypeError, ValueError):
                delay = min(2.0, max(delay, float(attempt.retry_after)))
            time.sleep(delay)

    def write(self, *, points: int = 1, respond_async: bool = False) -> Write:
        return self.send(self.new_write(points=points, respond_async=respond_async))

    @contextlib.contextmanager
    def load(
        self, *, sync: int = 2, asynchronous: int = 2, batch_every: int = 3, pace: float = 0
    ) -> Iterator[None]:
        """Keep `sync` + `asynchronous` clients writing while the block runs, each waiting `pace`
        s between writes; every `batch_every`-th write of a client is a batch of 20 points. On
        exit no new write starts, and the block waits for the writes under way to resolve or
        spend their budget."""
        stop = threading.Event()

        def client(respond_async: bool) -> None:
            for n in itertools.count(1):
                if stop.is_set():
                    return
                self.write(points=20 if n % batch_every == 0 else 1, respond_async=respond_async)
                stop.wait(pace)

        threads = [
            threading.Thread(target=client, args=(False,), daemon=True) for _ in range(sync)
        ] + [
            threading.Thread(target=client, args=(True,), daemon=True) for _ in range(asynchronous)
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        except BaseException:
            stop.set()  # a failing test (or its hard timeout) does not wait for the clients
            raise
        stop.set()
        for thread in threads:
            thread.join(self.retry_for + self.request_timeout + 5)

    @contextlib.contextmanager
    def probing(self, path: str = "/healthz", *, every: float = 0.5, timeout: float = 2.0):
        """Probe `path` every `every` s with a `timeout` s budget while the block runs."""
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = requests.get(self.base_url + path, timeout=timeout)
                    self.probes.append(
                        Attempt(started, time.monotonic(), response.status_code,
                                response.headers.get("Content-Type", ""), None, response.text[:200])
                    )  # fmt: skip
                except requests.RequestException as exc:
                    self.probes.append(
                        Attempt(started, time.monotonic(), None, error=type(exc).__name__)
                    )
                stop.wait(every)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout + 5)

    # --- looking at it ---------------------------------------------------------------------

    def attempts(self, *, respond_async: bool | None = None) -> list[Attempt]:
        return [
            a
            for w in list(self.writes)
            if respond_async is None or w.respond_async == respond_async
            for a in w.attempts
        ]

    def summary(self) -> str:
        counts = Counter(
            (("async" if w.respond_async else "sync"), a.status or a.error)
            for w in self.writes
            for a in w.attempts
        )
        return ", ".join(
            f"{kind} {status}: {n}" for (kind, status), n in sorted(counts.items(), key=str)
        )

    def batches_settle(self, conn: psycopg.Connection, *, timeout: float) -> dict[int, tuple]:
        """Wait until every acknowledged batch is done or failed; return {id: (state, error)}."""
        ids = [w.batch_id for w in self.writes if w.succeeded and w.final.status == 202]
        deadline = time.monotonic() + timeout
        while True:
            rows = conn.execute(
                "SELECT id, state, error FROM ingest_batches WHERE id = ANY(%s)", [ids]
            ).fetchall()
            states = {row[0]: (row[1], row[2]) for row in rows}
            open_ = [i for i in ids if states.get(i, ("missing",))[0] in ("pending", "running")]
            if not open_ or time.monotonic() > deadline:
                return {i: states.get(i, ("missing", "")) for i in ids}
            time.sleep(0.2)

    def problems(self, conn: psycopg.Connection, *, settle: float = 60.0) -> list[str]:
        """Every broken promise, one line each (an empty list when the ledger is exact)."""
        found: list[str] = []
        batches = self.batches_settle(conn, timeout=settle)
        rows = dict(
            conn.execute(
                "SELECT floor(p.value / %s)::bigint, count(*) FROM metric_points p "
                "JOIN metrics m ON m.id = p.metric_id WHERE m.name = %s GROUP BY 1",
                [VALUES_PER_WRITE, METRIC],
            ).fetchall()
        )
        for write in self.writes:
            stored = rows.get(write.number, 0)
            final = write.final
            history = "; ".join(a.describe() for a in write.attempts[-3:])
            if not write.resolved:
                found.append(
                    f"{write.describe()}: no 2xx or 4xx within {self.retry_for:.0f} s of "
                    f"retries with the same key ({len(write.attempts)} attempts, last: "
                    f"{history}) — a retry with the same key must converge"
                )
                continue
            if write.succeeded:
                if final.status == 202:
                    state, error = batches.get(write.batch_id, ("missing", ""))
                    if state != "done":
                        found.append(
                            f"{write.describe()}: 202 but its batch {write.batch_id} ended "
                            f"{state!r} ({error}) — a 202 means the points will be stored"
                        )
                        continue
                if stored != write.points:
                    found.append(
                        f"{write.describe()}: {final.status} after {len(write.attempts)} "
                        f"attempt(s) but {stored} of its {write.points} point(s) stored — "
                        f"after a 2xx every point is stored exactly once (history: {history})"
                    )
            elif stored:
                found.append(
                    f"{write.describe()}: ended {final.status} but {stored} point(s) stored — "
                    f"after a 4xx none is"
                )
        for write in self.writes:
            for attempt in write.attempts:
                error = attempt.status is not None and attempt.status >= 400
                if error and not attempt.content_type.startswith(PROBLEM):
                    found.append(
                        f"{write.describe()}: error body is not problem+json: "
                        f"{attempt.describe()} — every error is RFC 9457 problem+json"
                    )
        return found
