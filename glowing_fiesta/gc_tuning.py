"""The garbage collector of a long-running process, settled once its code is loaded.

A process of this service holds about 130,000 long-lived objects (Django, DRF, Celery, the URL
patterns, the settings) and every request makes and drops tens of thousands more (a 1000-point
batch: a dict and a tags dict per point, their strings, the rows). With CPython's defaults the
collector runs every 700 new objects and, every hundred runs, walks all of them again: a quarter
of the CPU time of a batch request went to it (docs/PERFORMANCE.md, "The collector").

`gc_settle` moves what exists after start-up into the permanent generation (`gc.freeze`), which
no collection walks again, and lets the youngest generation grow to GEN0_THRESHOLD objects before
a collection. Reference counting still frees almost everything at once; the collector is only for
cycles, and it still finds them, later and cheaper.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

# Objects allocated (minus freed) between collections of the youngest generation (CPython: 700).
GEN0_THRESHOLD = 10_000


def gc_settle(*, load_urls: bool = True) -> int:
    """Freeze the objects that exist now and raise the youngest threshold; return how many were
    frozen. `load_urls` imports the URL patterns first (Django loads them at the first request),
    so the views and their modules are frozen with the rest."""
    if load_urls:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 - imported for its side effect
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    frozen = gc.get_freeze_count()
    logger.debug(
        "garbage collector settled", extra={"frozen": frozen, "gen0_threshold": GEN0_THRESHOLD}
    )
    return frozen
