"""A key's namespaces: the metric-name prefixes it may read and write (none: every metric).

`namespace_allows` is the one decision, on every path: JSON writes, the protocols (through
`metrics.services.points_ingest_partial`), the reads, the lists, deletes, the service's own
figures and the Prometheus query API. A name is inside when it starts with one of the prefixes;
a key without prefixes reaches every metric, as keys did before namespaces existed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from glowing_fiesta.exceptions import Problem
from metrics.points import NAME_MAX

NAMESPACES_MAX = 20
# The characters of a metric name (metrics.points.NAME_RE); a prefix is 1-191 of them.
PREFIX_RE = re.compile(rf"[A-Za-z0-9_.\-:/]{{1,{NAME_MAX}}}")
# The prefix every figure of the service itself starts with (selfmetrics, GET /metrics).
SELF_NAMESPACE = "glowing_fiesta."


class NamespaceForbidden(Problem):
    """A write to a metric outside the calling key's namespaces."""

    status = 403
    slug = "namespace-forbidden"
    title = "Outside the key's namespaces"


def namespaces_check(prefixes: Iterable[str]) -> list[str]:
    """The prefixes without repeats, in order; ValueError saying what is wrong otherwise."""
    chosen = list(dict.fromkeys(prefixes))
    bad = [prefix for prefix in chosen if not PREFIX_RE.fullmatch(prefix)]
    if bad:
        raise ValueError(
            f"invalid namespace(s): {', '.join(repr(p[:60]) for p in bad)}; a namespace is 1-"
            f"{NAME_MAX} characters from letters, digits and _ . - : / (e.g. checkout.)"
        )
    if len(chosen) > NAMESPACES_MAX:
        raise ValueError(f"at most {NAMESPACES_MAX} namespaces per key; got {len(chosen)}")
    return chosen


def namespaces_parse(value: str) -> list[str]:
    """A comma-separated list (the command line, the admin's text box), checked."""
    return namespaces_check(part.strip() for part in value.split(",") if part.strip())


def namespace_allows(prefixes: tuple[str, ...], name: str) -> bool:
    """Whether metric `name` is inside `prefixes` (a tuple; empty: every metric)."""
    return not prefixes or name.startswith(prefixes)


def namespace_checker(prefixes: Sequence[str]) -> Callable[[str], bool] | None:
    """`namespace_allows` bound to `prefixes`, or None when they allow every metric (so that
    callers skip the check altogether)."""
    if not prefixes:
        return None
    bound = tuple(prefixes)
    return lambda name: namespace_allows(bound, name)


def namespaces_outside(prefixes: tuple[str, ...], names: Iterable[str]) -> list[int]:
    """The indexes of `names` outside `prefixes`: each distinct name decided once (a batch
    repeats a few names), the indexes looked for only when some name is outside."""
    if not prefixes:
        return []
    names = list(names)
    outside = {name for name in set(names) if not namespace_allows(prefixes, name)}
    if not outside:
        return []
    return [index for index, name in enumerate(names) if name in outside]
