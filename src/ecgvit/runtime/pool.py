"""Worker processes that run whole batches, in order, and die with their parent.

Generic on purpose: the caller names a module-level initializer and batch function (the
predictor's), so this module knows nothing about models. Workers are spawned (not forked: the
parent may hold ONNX Runtime / OpenMP thread pools that a forked child would inherit in an
undefined state) and on Linux ask the kernel to kill them when the parent dies
(PR_SET_PDEATHSIG), so a `kill -9` of `ecgvit predict` leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["WorkerPool", "WorkerDied", "die_with_parent"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


class WorkerDied(RuntimeError):
    """A worker process died mid-run (out of memory, killed)."""


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the pool's own parent watch still applies
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init(parent_pid: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    die_with_parent(parent_pid)
    # A SIGINT meant for the parent (Ctrl-C reaches the whole process group) must not kill
    # workers mid-batch: the parent stops them itself, cancelling what is queued.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*initargs)


class WorkerPool:
    """`n` spawned processes, each set up once by `initializer(*initargs)`."""

    def __init__(self, n: int, initializer: Callable[..., None], initargs: tuple[Any, ...]):
        self.n = n
        self.initargs = initargs
        self._ex = ProcessPoolExecutor(
            n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(os.getpid(), initializer, initargs),
        )

    def map_ordered(self, fn: Callable[[Any], T], jobs: Iterable[Any], in_flight: int = 2) -> Iterator[T]:
        """fn(job) for each job, yielded in job order, `in_flight` jobs per process queued at
        most (enough to never idle, little to cancel when the caller stops early)."""
        pending: deque[Future[T]] = deque()
        it = iter(jobs)
        try:
            for job in it:
                pending.append(self._ex.submit(fn, job))
                if len(pending) >= in_flight * self.n:
                    break
            while pending:
                result = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(self._ex.submit(fn, nxt))
                yield result
        except BrokenProcessPool:
            raise WorkerDied("a worker process died (out of memory?)") from None
        finally:
            for f in pending:  # an interrupted run stops its queued jobs
                f.cancel()

    def map(self, fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """fn over items in the workers, unordered scheduling, results in item order."""
        return list(self._ex.map(fn, items))

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)
