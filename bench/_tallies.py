"""What clients count inside a measured window, and the checks and verdicts read from it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench._common import log, percentile


@dataclass
class Tally:
    """What one client saw inside the measured window."""

    done: int = 0  # points (batches) or requests (single) completed in the window
    errors: int = 0
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.done += other.done
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.latencies_ms += other.latencies_ms


@dataclass(frozen=True)
class Window:
    start: float  # time.time() at which counting starts (after the warm-up)
    end: float


def merge(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total


def window_after(warmup: float, duration: float) -> Window:
    # A little slack for the pool to fork before the warm-up starts.
    start = time.time() + 0.5 + warmup
    return Window(start=start, end=start + duration)


def tally_check(label: str, tally: Tally) -> None:
    """Log a phase's failed requests; stop the run when it completed nothing."""
    if tally.errors:
        log(f"{label}: {tally.errors} failed requests; first: {tally.first_error}")
    if not tally.done:
        raise SystemExit(f"bench: {label} completed nothing in the measured window")


def percentiles(tally: Tally) -> tuple[float, float, float]:
    """p50, p95 and p99 of the tally's latencies."""
    return tuple(percentile(tally.latencies_ms, q) for q in (50, 95, 99))  # type: ignore[return-value]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
