"""Command-line options more than one benchmark takes, with one spelling, default and help."""

from __future__ import annotations

import argparse
import re


def round_options(
    parser: argparse.ArgumentParser,
    *,
    clients: int | None = None,
    clients_help: str = "client processes per phase",
    rounds: int = 1,
    rounds_help: str = "repeat and report medians",
) -> None:
    """The options of a benchmark measured in rounds of phases, each phase a warm-up and a
    measured window against gunicorn: --clients (when `clients` is given), --workers,
    --duration, --warmup and --rounds."""
    if clients is not None:
        parser.add_argument("--clients", type=int, default=clients, help=clients_help)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per phase")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)


def duration(text: str) -> int:
    """A duration as locust writes it: 90, 90s, 2m, 1h30m; in seconds."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90, 90s, 2m, 1h30m)")
    hours, minutes, secs = (int(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def read_options(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark timing GET requests from one sequential client
    (bench._reads.measure_http): --requests measured and --warmup unmeasured per shape."""
    parser.add_argument("--requests", type=int, default=40, help="measured requests per shape")
    parser.add_argument("--warmup", type=int, default=5)
