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


def _selection(view: GetOrPostView, request: Request, values: Any) -> dict[str, Any]:
    """The series a request selects: its match[] selectors, its time range, its key's
    namespaces (the keyword arguments of the selectors)."""
    start, end = _range(values)
    return {
        "matches": as_list(values, "match[]"),
        "start_s": start,
        "end_s": end,
        "namespaces": view.namespaces(request),
    }


class SeriesView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        if not as_list(values, "match[]"):
            raise BadData("no match[] parameter provided")
        found = series.series_find(**_selection(self, request, values))
        return render.answer([dict(labels) for labels in found[: _limit(values)]])


class LabelsView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        names = series.label_names(**_selection(self, request, values))
        return render.answer(names[: _limit(values)])


class LabelValuesView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        found = series.label_values(name=kwargs["name"], **_selection(self, request, values))
        return render.answer(found[: _limit(values)])


class MetadataView(GetOrPostView):
    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        found = series.metadata(
            metric=values.get("metric") or None, namespaces=self.namespaces(request)
        )
        names = sorted(found)[: _limit(values)]
        return render.answer({name: found[name] for name in names})
