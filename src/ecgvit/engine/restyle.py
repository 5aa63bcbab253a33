"""Restyled training pages: each real page's own signals redrawn by other carts, for augmentation.

A model on the reader's leads trained on one cart's pages still learns that cart's quirks (how
its reader errors look, its line widths, its layout's timing). `restyled_arrays` reads each
training page with the page reader (full resolution), redraws its signals with the generator in
`copies` random styles and layouts (`sample_style`: family, paper, dpi, gain, colours; 25 mm/s),
some lightly distorted, and turns each drawing into the model's input exactly as a page at
prediction time is (decoded at the reader's draft scale, read, redrawn canonically). The label is
the real page's. Leads the page does not print are drawn flat where a layout prints longer (the
canonical input takes each lead's standard 2.5 s window, which is the real one).

Cached per (page md5, seed, copy, preprocessing, reader version) under
CACHE/restyle/: every fold of a CV shares one restyling of each page.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ecgvit.config import PreprocessConfig
from ecgvit.data.preprocess import DECODER_VERSION, READER_VERSION, default_cache_dir, draft_size, preprocess_array
from ecgvit.reader import read_page
from ecgvit.synth import distort as _distort
from ecgvit.synth import styles as _styles
from ecgvit.synth.page import random_meta, render

__all__ = ["restyled_arrays"]

LIGHT_SHARE = 0.4  # of the copies, lightly distorted (a scan's blur, tilt, uneven light)
# part of the cache key: bump it when the restyled drawings change (-s2: 25 mm/s only; -s3: an
# unreadable drawing replaced by the page's own input)
RESTYLE_VERSION = "-s3"


def _as_decoded(page: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """`page` at the size a JPEG draft decode for `target` would give (halved while it stays
    at least `target` on both sides), area-averaged as the decoder's DCT scaling is."""
    h, w = page.shape[:2]
    s = 1
    while w // (2 * s) >= target[0] and h // (2 * s) >= target[1] and s < 8:
        s *= 2
    if s == 1:
        return page
    return cv2.resize(page, (w // s, h // s), interpolation=cv2.INTER_AREA)


def _restyle_one(args: tuple[str, str, PreprocessConfig, int, int, str]) -> np.ndarray:
    path, md5, cfg, copies, seed, cache_dir = args
    out = Path(cache_dir) / md5[:2] / f"{md5}_{seed}_{copies}.npy"
    if out.exists():
        return np.load(out)
    reading = read_page(path)
    arrays: list[np.ndarray | None] = []
    target = draft_size(cfg)
    for k in range(copies):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(md5[:12], 16), k]))
        if reading.layout is None:  # nothing read: the page itself stands in
            arrays.append(None)
            continue
        # 25 mm/s only: the page prints most leads 2.5 s, and a faster page would show windows
        # of them it never printed (drawn flat: a page of missing leads under a real label)
        st, layout = _styles.sample_style(rng, speeds=(25.0,))
        meta = random_meta(rng, 70.0)
        if st.family != "khan":
            meta.update(_styles.extra_meta(rng, {}))
        page = render(np.nan_to_num(reading.signals, nan=0.0), st, meta, 500, layout)
        if rng.random() < LIGHT_SHARE:
            page, _ = _distort.apply(page, rng, "light")
        pa = preprocess_array(_as_decoded(page, target), cfg)
        # a drawing the reader cannot read (a grid as dark as the trace, say) would be a blank
        # input under a real label: the page's own input stands in
        arrays.append(None if pa.reading is None or pa.reading.layout is None else pa.array)
    if any(a is None for a in arrays):
        from ecgvit.data.preprocess import load_page_array

        own = load_page_array(path, cfg).array
        arrays = [own if a is None else a for a in arrays]
    stack = np.stack([a for a in arrays if a is not None])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, stack)
    os.replace(tmp, out)
    return stack


def _worker_init() -> None:
    cv2.setNumThreads(1)


def restyled_arrays(
    paths: Sequence[str],
    md5s: Sequence[str],
    cfg: PreprocessConfig,
    copies: int,
    seed: int = 0,
    cache_root: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(N, copies, H, W[, C]) uint8: each page's restyled model inputs (see module doc)."""
    if not cfg.reads_leads:
        raise ValueError(f"restyling needs a model on the reader's leads (preprocess form {cfg.form!r} reads the page)")
    if copies < 1:
        raise ValueError(f"copies={copies}: must be >= 1")
    cache = (
        Path(cache_root or default_cache_dir())
        / "restyle"
        / f"{cfg.key()}{DECODER_VERSION}{READER_VERSION}{RESTYLE_VERSION}"
    )
    jobs = [(str(p), m, cfg, int(copies), int(seed), str(cache)) for p, m in zip(paths, md5s, strict=True)]
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc="restyle", unit="page", disable=not progress, leave=False)
    out: list[np.ndarray] = []
    if n == 1:
        for j in jobs:
            out.append(_restyle_one(j))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init) as ex:
            for a in ex.map(_restyle_one, jobs, chunksize=2):
                out.append(a)
                bar.update()
    bar.close()
    return np.stack(out)
