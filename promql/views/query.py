"""`/api/v1/query` and `/api/v1/query_range`: PromQL over the store."""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpResponse
from rest_framework.request import Request

from .. import params, queries, render
from .base import GetOrPostView


class QueryView(GetOrPostView):
    """An instant query: the expression's value at `time` (now by default)."""

    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        query = params.query_param(values)
        at = params.time_param(values, "time", default=time.time())
        value, at_ms = queries.query_instant(
            query=query, time_s=at, namespaces=self.namespaces(request)
        )
        return render.answer(render.instant_result(value, at_ms))


class QueryRangeView(GetOrPostView):
    """A range query: the expression at every step from `start` to `end`."""

    def answer(self, request: Request, **kwargs: Any) -> HttpResponse:
        values = self.params(request)
        query = params.query_param(values)
        start, end, step = params.range_params(values)
        value, times = queries.query_range(
            query=query, start_s=start, end_s=end, step_s=step, namespaces=self.namespaces(request)
        )
        return render.answer(render.range_result(value, times))
