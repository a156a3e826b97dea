"""The run of a benchmark against a service of its own: a scratch database (and, if asked, a
Celery queue) with an API key, rounds measured one after the other, their medians."""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bench import _common

R = TypeVar("R")


@dataclass(frozen=True)
class Scratch:
    """What a benchmark runs against: its database, the service's environment, a key."""

    database_url: str  # the scratch database's
    redis_url: str
    env: dict[str, str]  # the service's environment (bench._common.service_env) on it
    key: str  # an API key with scopes write and read, rate limit 10,000,000 a minute
    machine: str  # bench._common.machine_summary


@contextlib.contextmanager
def scratch(database: str, *, key_name: str, queue: bool = False) -> Iterator[Scratch]:
    """Database `database` created and migrated next to DATABASE_URL's (dropped after), with a
    Celery queue of the run's own (CELERY_QUEUE) when `queue`, and an API key named `key_name`."""
    database_url = _common.required_env("DATABASE_URL")
    redis_url = _common.required_env("REDIS_URL")
    setup_env = _common.service_env(database_url, redis_url)
    with contextlib.ExitStack() as stack:
        bench_url = stack.enter_context(_common.scratch_database(database_url, database, setup_env))
        extra = {"CELERY_QUEUE": stack.enter_context(_common.own_queue(redis_url))} if queue else {}
        env = _common.service_env(bench_url, redis_url, **extra)
        key = _common.api_key_create(env, name=key_name, rate_limit=10_000_000)
        yield Scratch(bench_url, redis_url, env, key, _common.machine_summary(bench_url))


@contextlib.contextmanager
def django_scratch(database: str) -> Iterator[str]:
    """Database `database` created and migrated next to DATABASE_URL's (dropped after), with
    Django set up in this process on it (for benchmarks that call services directly); its URL."""
    database_url = _common.required_env("DATABASE_URL")
    env = _common.service_env(database_url, _common.required_env("REDIS_URL"))
    with _common.scratch_database(database_url, database, env) as scratch_url:
        os.environ.update(env, DATABASE_URL=scratch_url)
        # Only now: settings are read from the environment just set.
        import django

        django.setup()
        yield scratch_url


def rounds_run(count: int, run_round: Callable[[int], R]) -> list[R]:
    """`run_round(n)` for n in 0..count-1, one after the other, logging which."""
    rounds = []
    for n in range(count):
        _common.log(f"round {n + 1} of {count}")
        rounds.append(run_round(n))
    return rounds


def median(rounds: Sequence[object], attr: str, index: int | None = None) -> float:
    """The median over the rounds of a figure (`attr`, or item `index` of it)."""
    values = [getattr(r, attr) if index is None else getattr(r, attr)[index] for r in rounds]
    return statistics.median(values)


def round_lines(rounds: Sequence[R], describe: Callable[[R], str]) -> list[str]:
    """A blank line and `round n: <describe(round)>` for each round, when there are several
    (the medians above them say it all for one)."""
    if len(rounds) < 2:
        return []
    return ["", *(f"round {n}: {describe(r)}" for n, r in enumerate(rounds, 1))]
