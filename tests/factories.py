"""factory_boy factories for rows; each app adds its own below."""

from __future__ import annotations

from typing import Any

import factory
from factory.django import DjangoModelFactory

from apikeys import keyformat
from apikeys.models import ApiKey
from metrics import storage
from metrics.models import Metric, MetricType, Series


class ApiKeyFactory(DjangoModelFactory):
    """An ApiKey row; the raw key is on `.raw_key` (not stored anywhere)."""

    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"key-{n}")
    scopes = factory.LazyFunction(lambda: ["write", "read"])
    # High, so tests that are not about rate limits never meet one.
    rate_limit = 100_000

    @classmethod
    def _create(cls, model_class: type[ApiKey], *args: Any, **kwargs: Any) -> ApiKey:
        raw = keyformat.generate()
        kwargs["prefix"] = keyformat.parse(raw).prefix
        kwargs["key_hash"] = keyformat.digest(raw)
        key = super()._create(model_class, *args, **kwargs)
        key.raw_key = raw
        return key


class MetricFactory(DjangoModelFactory):
    """A metric row with no points (write points through `tests.helpers.ingest`)."""

    class Meta:
        model = Metric

    name = factory.Sequence(lambda n: f"metric.{n}")
    type = MetricType.COUNTER


class SeriesFactory(DjangoModelFactory):
    """A series of a metric, its tags hashed as the write path hashes them."""

    class Meta:
        model = Series

    metric = factory.SubFactory(MetricFactory)
    tags = factory.LazyFunction(dict)
    tags_hash = factory.LazyAttribute(lambda series: storage.tags_hash(series.tags))
