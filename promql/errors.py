"""The errors of the Prometheus HTTP API, each with its `errorType` and HTTP status."""

from __future__ import annotations


class PromQLError(Exception):
    error_type = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadData(PromQLError):
    """A malformed query or parameter (400), as Prometheus answers a parse error."""

    error_type = "bad_data"
    status = 400


class ExecutionError(PromQLError):
    """A query that parsed but cannot be evaluated (422): a many-to-many match, a label set
    produced twice, or a construct this service does not evaluate."""

    error_type = "execution"
    status = 422


class Unsupported(ExecutionError):
    """A function, operator or modifier the service does not evaluate (422), named."""


class QueryTimeout(PromQLError):
    error_type = "timeout"
    status = 503


class TooManySeries(ExecutionError):
    """A selector matched more series than PROMQL_MAX_SERIES (422, with the count)."""
