"""The PromQL reference fixtures: one dataset and one Prometheus serving it, for the session."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.promql.dataset import Dataset, dataset_build
from tests.promql.reference import Reference, binaries, reference_start
from tests.security.conftest import start_gunicorn  # noqa: F401 - gunicorn on the test database


@pytest.fixture(scope="session")
def promql_dataset() -> Dataset:
    """The default dataset (3 hours, 15 s samples) ending at the last whole minute."""
    return dataset_build(end=time.time())


@pytest.fixture(scope="session")
def reference_prometheus(promql_dataset, tmp_path_factory) -> Iterator[Reference]:
    """Debian's prometheus serving `promql_dataset`, stopped at the end of the session."""
    assert binaries(), (
        "prometheus or promtool is missing: apt-get install prometheus (.ci/run does)"
    )
    reference = reference_start(promql_dataset, tmp_path_factory.mktemp("prometheus"))
    yield reference
    reference.stop()
