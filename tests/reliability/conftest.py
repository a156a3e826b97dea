"""Fault tests: the exactly-once promise through outages, hangs, kills and locks.

Each test runs the service as deployed, on servers of its own:

- a private PostgreSQL cluster: `initdb` once per session into a temporary directory (as the
  `postgres` OS user when run as root), migrated with `manage.py migrate`, then copied for each
  test and started on a free port of 127.0.0.1 with trust authentication;
- a private `redis-server` on a free port, without persistence;
- gunicorn with `deploy/gunicorn.conf.py` (its sync workers and 30 s timeout; only the bind
  address and worker count are set), a Celery worker (prefork, 2 processes) and beat, on a queue
  of their own, with production settings (DJANGO_DEBUG off, generated secrets);
- an API key made with `manage.py create_api_key`;
- for the tests about the broker, parametrized by `broker`: Celery's broker is either that Redis
  or a private RabbitMQ node (Debian's `rabbitmq-server` with its own node name, ports, data and
  log directories, one per test module, each test on a queue of its own).

The test stops, pauses, kills or locks one of them while a `Ledger` client writes, then checks
the ledger against `metric_points`. Every process is killed and every directory deleted at the
end, whatever happened; their logs are shown with a failure. Nothing here connects to the shared
PostgreSQL or Redis named by DATABASE_URL and REDIS_URL: the tests use no Django database fixture,
and every process gets URLs of the private servers only.

Each test is marked `fault(timeout=SECONDS)`: past that it fails, and the servers are torn down.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    PgCluster,
    RabbitMQServer,
    Stack,
    create_template,
    rabbitmq_available,
    running_stack,
)

DEFAULT_TIMEOUT = 180


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PgCluster]:
    template = create_template()
    yield template
    template.destroy()


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """A private RabbitMQ node for the tests of one module (a node takes seconds to boot)."""
    if not rabbitmq_available():
        pytest.fail("rabbitmq-server is not installed (.ci/run installs it)")
    node = RabbitMQServer(Path(tempfile.mkdtemp(prefix="gf-fault-rabbitmq-")))
    try:
        node.start()
        yield node
    finally:
        node.destroy()


@pytest.fixture
def start_stack(pg_template: PgCluster, request: pytest.FixtureRequest):
    """`start_stack(worker=True, web_workers=4, env={...}, broker="redis")` starts one stack for
    this test; `broker="rabbitmq"` puts Celery on the module's private RabbitMQ node.

    Its logs go to a directory of its own (pytest's temporary directories are pruned by any later
    run on the machine), deleted when the test passes and kept, with its path in the failure
    report, when it fails."""
    stacks: list[Stack] = []
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[-60:]
    workdir = Path(tempfile.mkdtemp(prefix=f"gf-fault-{name}-"))
    with contextlib.ExitStack() as contexts:

        def start(*, broker: str = "redis", **options) -> Stack:
            if broker == "rabbitmq":
                node = request.getfixturevalue("rabbitmq")
                if not node.running():  # a test that stopped it failed before starting it
                    node.start()
                options["rabbitmq"] = node
            stack = contexts.enter_context(running_stack(pg_template, workdir, **options))
            request.node._fault_stack = stack
            stacks.append(stack)
            return stack

        yield start
        # The hard timeout must not interrupt the teardown that kills the servers.
        signal.setitimer(signal.ITIMER_REAL, 0)
    if not getattr(request.node, "_fault_failed", False):
        shutil.rmtree(workdir, ignore_errors=True)
    for stack in stacks:
        for restart in stack.restarts:
            # Not a broken promise (systemd restarts them too), but worth knowing.
            warnings.warn(f"a process died by itself: {restart}", stacklevel=1)


class FaultTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _hard_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a fault test that runs past its `fault(timeout=...)`: a hung server must not hang
    the suite. The servers are torn down by the fixtures afterwards."""
    marker = request.node.get_closest_marker("fault")
    seconds = marker.kwargs.get("timeout", DEFAULT_TIMEOUT) if marker else DEFAULT_TIMEOUT

    def expire(signum, frame) -> None:
        raise FaultTimeout(f"the test ran past its hard timeout of {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item._fault_failed = True
    stack = getattr(item, "_fault_stack", None)
    if report.failed and stack is not None and report.when == "call":
        report.sections.append(
            ("server logs (last lines; all kept in the paths shown)", stack.logs())
        )
