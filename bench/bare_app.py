"""The bare ceiling for single points: validate a counter body, INSERT one row, answer 201.

No API key, no rate limit, no metric or series lookup, no rollups: what is left is the cost of
gunicorn, Django's middleware, DRF's request parsing and one round trip to PostgreSQL. The body is
validated by the same function as the real endpoint's, so both sides reject the same input.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from glowing_fiesta import health
from glowing_fiesta.exceptions import Problem
from metrics.models import MetricType
from metrics.points import PointErrors, parse_point


class BareCounterView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        try:
            point = parse_point(request.data, kind=MetricType.COUNTER, now=datetime.now(UTC))
        except PointErrors as exc:
            raise Problem("Invalid point.", errors=exc.errors) from None
        with connection.cursor() as cursor:
            # metric_id/series_id 0: no such metric; the points table has no foreign keys.
            cursor.execute(
                "INSERT INTO metric_points (metric_id, series_id, value, recorded_at) "
                "VALUES (0, 0, %s, %s)",
                [point.value, point.timestamp],
            )
        return Response(
            {
                "name": point.name,
                "type": point.type,
                "value": point.value,
                "timestamp": point.timestamp.isoformat().replace("+00:00", "Z"),
                "tags": point.tags,
            },
            status=201,
        )


urlpatterns = [
    path("healthz", health.healthz),
    path("bare/counter", BareCounterView.as_view()),
]
