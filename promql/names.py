"""How the service's names appear in PromQL.

A metric `http.requests` is `http_requests` in PromQL: every character outside `[a-zA-Z0-9_:]`
becomes `_`. It can also be named as stored, `{"http.requests"}` or
`{__name__="http.requests"}`. Tag keys become label names the same way. Two metrics whose names
map to one PromQL name are both returned, as separate series; never merged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .values import NAME, Labels, labels_of

_OUTSIDE = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_OUTSIDE = re.compile(r"[^a-zA-Z0-9_]")


def promql_name(name: str) -> str:
    return _OUTSIDE.sub("_", name)


def label_name(key: str) -> str:
    return _LABEL_OUTSIDE.sub("_", key)


def series_labels(metric_name: str, tags: Mapping[str, str]) -> Labels:
    """A series' labels: its tags (keys mapped; of two keys mapping to one label, the first in
    key order wins) and `__name__`."""
    pairs: dict[str, str] = {}
    for key in sorted(tags):
        pairs.setdefault(label_name(key), tags[key])
    pairs[NAME] = promql_name(metric_name)
    return labels_of(pairs)
