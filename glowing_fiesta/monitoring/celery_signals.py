"""Celery tasks by outcome; a pool process settles its collector when it starts and flushes the
own figures when it exits.

Imported by glowing_fiesta/celery.py so that every worker connects the handlers; they run in
the pool process that ran the task. The recording calls are reached through the package
(`monitoring.celery_task`), which loads record.py on first use: celery.py imports this module
before the settings are checked (see __init__.py).
"""

from __future__ import annotations

from typing import Any

from celery import signals

from glowing_fiesta import monitoring
from glowing_fiesta.gc_tuning import gc_settle

from . import sink


def _name(sender: Any) -> str:
    return getattr(sender, "name", None) or "unknown"


@signals.task_success.connect(weak=False)
def _task_success(sender: Any = None, **_: Any) -> None:
    monitoring.celery_task(task=_name(sender), outcome="success")


@signals.task_failure.connect(weak=False)
def _task_failure(sender: Any = None, **_: Any) -> None:
    monitoring.celery_task(task=_name(sender), outcome="failure")


@signals.task_retry.connect(weak=False)
def _task_retry(sender: Any = None, **_: Any) -> None:
    monitoring.celery_task(task=_name(sender), outcome="retry")


@signals.task_revoked.connect(weak=False)
def _task_revoked(sender: Any = None, **_: Any) -> None:
    monitoring.celery_task(task=_name(sender), outcome="revoked")


@signals.worker_process_init.connect(weak=False)
def _pool_process_init(**_: Any) -> None:
    # Each pool process, once forked with the tasks loaded: a drained group of 10,000 points
    # makes hundreds of thousands of objects (glowing_fiesta/gc_tuning.py).
    gc_settle(load_urls=False)


@signals.worker_process_shutdown.connect(weak=False)
def _pool_process_shutdown(**_: Any) -> None:
    # Pool processes leave with os._exit, which skips atexit: flush here instead.
    sink.flush_now()
