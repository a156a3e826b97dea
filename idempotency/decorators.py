"""`@idempotent`: the Idempotency-Key header applied to a view's write, as a decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from glowing_fiesta.exceptions import PROBLEM_CONTENT_TYPE

from .services import Outcome, fingerprint, idempotent_run

HEADER = "Idempotency-Key"

Write = Callable[..., Response]


def idempotent(write: Write) -> Write:
    """Run `write(request, ...)` once per (API key, Idempotency-Key) and replay its response.

    `write` gets an authenticated DRF request first and returns a Response; its status, body
    and headers are saved with the outcome, in the transaction of its writes. Without the
    header it simply runs. A replay carries `Idempotent-Replayed: true`.
    """

    @functools.wraps(write)
    def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return write(request, *args, **kwargs)

        def action() -> Outcome:
            response = write(request, *args, **kwargs)
            # Only the headers the write chose; Content-Type is decided again when rendering.
            headers = {k: v for k, v in response.items() if k.lower() != "content-type"}
            return Outcome(response.status_code, response.data, headers)

        outcome = idempotent_run(
            api_key_id=request.auth.pk,
            key=key,
            digest=lambda: fingerprint(request.method, request.path, request.data),
            now=timezone.now(),
            action=action,
        )
        headers = dict(outcome.headers)
        if outcome.replayed:
            headers["Idempotent-Replayed"] = "true"
        content_type = PROBLEM_CONTENT_TYPE if outcome.status >= 400 else None
        return Response(
            outcome.body, status=outcome.status, headers=headers, content_type=content_type
        )

    return wrapper
