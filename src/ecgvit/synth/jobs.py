"""Running page-writing jobs in this process or in spawned workers, with a progress bar.

Shared by `generate` (class pages) and `generate_negatives` (out-of-scope images).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def _in_worker(write: Callable[..., str], job: tuple[Any, ...]) -> str:
    import cv2

    cv2.setNumThreads(1)  # the worker processes are the parallelism
    return write(*job)


def run_jobs(
    write: Callable[..., str],
    jobs: Sequence[tuple[Any, ...]],
    keys: Sequence[str],
    workers: int,
    progress: bool,
    desc: str,
    unit: str,
) -> tuple[dict[str, int], float]:
    """Call `write(*job)` for every job (it returns the job's key); (count per key, seconds)."""
    counts = {k: 0 for k in keys}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit=unit, desc=desc, disable=len(jobs) < 20)
    t0 = time.perf_counter()
    try:
        if workers == 1:
            for j in jobs:
                counts[write(*j)] += 1
                if bar:
                    bar.update(1)
        else:
            # spawn, not fork: forking after torch started its thread pool can deadlock the child.
            with ProcessPoolExecutor(max_workers=int(workers), mp_context=multiprocessing.get_context("spawn")) as ex:
                for f in as_completed([ex.submit(_in_worker, write, j) for j in jobs]):
                    counts[f.result()] += 1
                    if bar:
                        bar.update(1)
    finally:
        if bar:
            bar.close()
    return counts, time.perf_counter() - t0
