"""What exists, as Grafana's metric browser and variables ask for it: `/api/v1/series`,
`/api/v1/labels`, `/api/v1/label/<name>/values` and `/api/v1/metadata`."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from rest_framework.request import Request

from .. import params, render
from .. import selectors as series
from ..errors import BadData
from .base import GetOrPostView, as_list


def _limit(values: Any) -> int | None:
    text = values.get("limit", "")
    if text == "":
        return None
    try:
        limit = int(text)
    except ValueError:
        raise BadData(
            f'invalid parameter "limit": cannot parse "{text[:32]}" to a valid integer'
        ) from None
    if limit < 0:
        raise BadData('invalid parameter "limit": limit must be non-negative')
    return limit or None


def _range(values: Any) -> tuple[float | None, float | None]:
    start = params.time_param(values, "start") if values.get("start") else None
    end = params.time_param(values, "end") if values.get("end") else None
    return start, end


class SeriesView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        matches = as_list(values, "match[]")
        if not matches:
            raise BadData("no match[] parameter provided")
        start, end = _range(values)
        found = series.series_find(
            matches=matches, start_s=start, end_s=end, namespaces=self.namespaces(request)
        )
        limit = _limit(values)
        return render.answer([dict(labels) for labels in found[: limit or None]])


class LabelsView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        start, end = _range(values)
        names = series.label_names(
            matches=as_list(values, "match[]"),
            start_s=start,
            end_s=end,
            namespaces=self.namespaces(request),
        )
        limit = _limit(values)
        return render.answer(names[: limit or None])


class LabelValuesView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        start, end = _range(values)
        found = series.label_values(
            name=kwargs["name"],
            matches=as_list(values, "match[]"),
            start_s=start,
            end_s=end,
            namespaces=self.namespaces(request),
        )
        limit = _limit(values)
        return render.answer(found[: limit or None])


class MetadataView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        found = series.metadata(
            metric=values.get("metric") or None, namespaces=self.namespaces(request)
        )
        limit = _limit(values)
        names = sorted(found)[: limit or None]
        return render.answer({name: found[name] for name in names})
