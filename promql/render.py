"""Values as the Prometheus HTTP API writes them: times in float seconds, sample values as
strings (`"NaN"`, `"+Inf"`), series as `{"metric": {...}, "values": [[t, "v"], …]}`."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from django.http import HttpResponse

from .errors import BadData
from .values import Labels, Matrix, Scalar, String, Value, Vector


def number_text(value: float) -> str:
    """A float as Prometheus writes it (Go's FormatFloat 'f', -1): `2`, `0.5`, `NaN`, `+Inf`."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = np.format_float_positional(value, trim="-")
    elif text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _texts(values: np.ndarray) -> list[str]:
    """Every value as number_text would write it, without a Python step per value: whole numbers
    and the plain rest (from 1e-4 to 1e15) formatted by msgspec, whose shortest round-trip digits
    are repr's and Go's there, and number_text only for NaN, infinities and the magnitudes
    where repr would write an exponent."""
    finite = np.isfinite(values)
    magnitude = np.abs(np.where(finite, values, 0.0))
    whole = finite & (values == np.floor(values)) & (magnitude < 1e15)
    plain = finite & ~whole & (magnitude >= 1e-4) & (magnitude < 1e15)
    texts = np.empty(len(values), dtype=object)
    for mask, numbers in ((whole, values[whole].astype(np.int64)), (plain, values[plain])):
        if len(numbers):
            texts[mask] = msgspec.json.encode(numbers.tolist())[1:-1].decode().split(",")
    for k in np.flatnonzero(~(whole | plain)).tolist():
        texts[k] = number_text(float(values[k]))
    return texts.tolist()


def _seconds(times_ms: np.ndarray) -> list[float]:
    return (times_ms / 1000.0).tolist()


def metric_object(labels: Labels) -> dict[str, str]:
    return dict(labels)


def instant_result(value: Value, time_ms: int) -> dict[str, Any]:
    t = time_ms / 1000.0
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": [t, number_text(float(value.values[0]))]}
    if isinstance(value, String):
        return {"resultType": "string", "result": [t, value.value]}
    if isinstance(value, Matrix):
        return {
            "resultType": "matrix",
            "result": [
                {
                    "metric": metric_object(s.labels),
                    "values": [
                        list(pair) for pair in zip(_seconds(s.times), _texts(s.values), strict=True)
                    ],
                }
                for s in value.series
            ],
        }
    assert isinstance(value, Vector)
    result = []
    for i, labels in enumerate(value.labels):
        if value.present[i, 0]:
            result.append(
                {
                    "metric": metric_object(labels),
                    "value": [t, number_text(float(value.values[i, 0]))],
                }
            )
    return {"resultType": "vector", "result": result}


def range_result(value: Value, times_ms: np.ndarray) -> dict[str, Any]:
    if isinstance(value, Scalar):
        value = Vector([()], value.values[None, :], np.ones((1, len(times_ms)), dtype=bool))
    if not isinstance(value, Vector):
        kind = "string" if isinstance(value, String) else "range vector"
        raise BadData(
            f'invalid expression type "{kind}" for range query, must be Scalar or instant Vector'
        )
    seconds = times_ms / 1000.0
    result = []
    order = sorted(range(len(value.labels)), key=lambda i: value.labels[i])
    for i in order:
        present = value.present[i]
        if not present.any():
            continue
        steps = np.flatnonzero(present)
        texts = _texts(value.values[i, steps])
        pairs = list(zip(seconds[steps].tolist(), texts, strict=True))
        result.append({"metric": metric_object(value.labels[i]), "values": pairs})
    return {"resultType": "matrix", "result": result}


def answer(data: Any) -> HttpResponse:
    """A success answer, encoded by msgspec: a range query's thousands of pairs in C."""
    return HttpResponse(msgspec.json.encode(success(data)), content_type="application/json")


def success(data: Any, warnings: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    return body


def error(error_type: str, message: str) -> dict[str, Any]:
    return {"status": "error", "errorType": error_type, "error": message}
