"""The command-line options the benchmarks share (bench/_options.py)."""

from __future__ import annotations

import argparse

import pytest

from bench import _options


def test_durations_are_read_as_locust_writes_them():
    assert [_options.duration(t) for t in ("90", "90s", "2m", "1h30m")] == [90, 90, 120, 5400]


@pytest.mark.parametrize("text", ["", "m", "1.5m", "2d", "90 s"])
def test_a_duration_locust_would_not_read_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _options.duration(text)


def test_round_options_have_one_spelling_and_default_in_every_round_benchmark():
    parser = argparse.ArgumentParser()
    _options.round_options(parser, clients=3)
    args = parser.parse_args([])
    assert vars(args) == {"clients": 3, "workers": 4, "duration": 10.0, "warmup": 3.0, "rounds": 1}

    without_clients = argparse.ArgumentParser()
    _options.round_options(without_clients, rounds=3)
    assert "clients" not in vars(without_clients.parse_args([]))
    assert without_clients.parse_args(["--rounds", "5"]).rounds == 5
