"""The JSON behind the admin's chart page: the query API's answer, for a staff session.

The chart page runs in an admin's browser, which holds a session cookie and no API key (a key
in a page could be read by anything that runs there). This view takes the same query string as
GET /api/metrics/{name} and answers with the same selectors and body, problem+json included;
only who may call it differs: a logged-in staff user allowed to view metrics.
"""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Metric
from .series import series_respond


class CanViewMetrics(BasePermission):
    message = "Log in to the admin as a user who may view metrics."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(
            user and user.is_active and user.is_staff and user.has_perm("metrics.view_metric")
        )


class ChartDataView(APIView):
    """GET: the buckets of metric `metric_id` for the chart (the query API's parameters)."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [CanViewMetrics]
    schema = None  # an admin page's endpoint, not part of the API

    def get(self, request: Request, metric_id: int) -> Response:
        name = Metric.objects.filter(pk=metric_id).values_list("name", flat=True).first()
        # An unknown id answers as an unknown name would: 404 problem+json. A staff session
        # holds no key, so no namespaces: staff see every metric.
        return series_respond(request, name if name is not None else f"#{metric_id}", allowed=None)
