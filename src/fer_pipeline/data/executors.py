"""Where per-shard work runs: local processes by default, or a Dask cluster, both as a
``concurrent.futures.Executor``."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Literal, TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)

ExecutorKind = Literal["processes", "dask"]


def worker_count(workers: int | None) -> int:
    """``workers``, or one per core when it is ``None``."""
    return workers or os.cpu_count() or 1


@contextmanager
def open_executor(
    kind: ExecutorKind, workers: int | None = None, address: str | None = None
) -> Iterator[Executor]:
    """``processes``: ``workers`` local processes (default: one per core). ``dask``: the
    Dask cluster whose scheduler is at ``address`` (its workers must see the same paths),
    or, without one, a ``LocalCluster`` of ``workers`` single-threaded processes."""
    workers = worker_count(workers)
    if kind == "processes":
        # forkserver: a fork of a process running threads (MLflow's metrics) can deadlock;
        # the server imports the project once, and every worker is a fork of it.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["fer_pipeline.pipelines.ingestion.nodes"])
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
        ) as executor:
            yield executor
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            "executor: dask needs Dask's distributed scheduler: pip install 'fer-pipeline[dask]'"
        ) from exc
    if address:
        with Client(address) as client:
            logger.info("Dask cluster at %s: %s", address, client)
            yield client.get_executor()
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info("Dask LocalCluster of %d workers", workers)
        yield client.get_executor()


def _exit_with(parent: int) -> None:
    """In a worker: exits when ``parent`` is gone (killed with -9, it cannot stop its
    workers, which would otherwise wait for work forever)."""

    def watch() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def bounded_map(
    executor: Executor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[R]:
    """``fn(item)`` for each item, in order, with at most ``window`` items submitted
    and not yet taken, so that results never pile up in memory. A failure cancels the
    rest and is raised."""
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
