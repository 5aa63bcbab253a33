"""From a page file to a model-ready array, with an on-disk cache.

load_page_array(): decode (JPEG draft mode), find the trace area, crop, grayscale/colour,
area-downsample to the configured size -> uint8 array (H, W) or (H, W, 3).
PageCache: the same arrays stored under a key of (file md5, preprocessing config), so a second
training run decodes no JPEG at all.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ecgvit.config import PreprocessConfig, save_json, to_dict
from ecgvit.data.crop import CropResult, find_trace_box
from ecgvit.data.io import DecodedPage, open_page
from ecgvit.reader.canonical import render_signals, render_traces
from ecgvit.reader.read import read_page
from ecgvit.reader.reading import PageReading

# Crop detection wants a page copy at least this big; smaller drafts blur the grid away.
_DETECT_MIN = (540, 380)


@dataclass(frozen=True)
class PageArray:
    array: np.ndarray  # uint8, (H, W) grayscale or (H, W, 3) RGB
    crop: CropResult | None  # None when cfg.crop == "none"
    # what the page reader found (forms that read the leads), its signals and ink dropped
    reading: PageReading | None = None


def file_md5(path: str | Path) -> str:
    """md5 of the file bytes: the identity of a page for grouping and the cache."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


# The page reader reads a page decoded to at least this size (a 200 dpi page at half scale,
# ~4 px/mm: the 1 mm grid and a trace's strokes still resolved, in a third of the full-size time).
_READER_DRAFT = (1000, 700)


def draft_size(cfg: PreprocessConfig) -> tuple[int, int]:
    if cfg.reads_leads:
        return _READER_DRAFT
    # The crop keeps roughly 95% x 78% of a Khan page; ask the decoder for enough pixels that
    # the crop is still at least the target size, and enough for crop detection.
    w = int(np.ceil(cfg.width / 0.9))
    h = int(np.ceil(cfg.height / 0.75))
    if cfg.crop == "auto":
        w, h = max(w, _DETECT_MIN[0]), max(h, _DETECT_MIN[1])
    return w, h


def preprocess_image(img: Image.Image, cfg: PreprocessConfig, rgb: np.ndarray | None = None) -> PageArray:
    """Crop and resize an already-decoded page. rgb: `np.asarray(img)`, when the caller has it
    already. An RGB page goes through `preprocess_array` (the same bytes as PIL's crop and
    grey conversion, faster); other modes through PIL."""
    if rgb is not None or img.mode == "RGB":
        return preprocess_array(np.asarray(img) if rgb is None else rgb, cfg)
    if cfg.reads_leads:
        return preprocess_array(np.asarray(img.convert("RGB")), cfg)
    crop: CropResult | None = None
    if cfg.crop == "auto":
        crop = find_trace_box(img, fallback_box=cfg.fallback_box)
    elif cfg.crop == "box":
        crop = _configured_box(img.size, cfg)
    if crop is not None:
        img = img.crop(crop.box)
    if cfg.grayscale:
        img = img.convert("L")
    a = np.asarray(img)
    # Area interpolation, as the seed did: every source pixel contributes, thin traces survive.
    a = cv2.resize(a, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    return PageArray(np.ascontiguousarray(a), crop)


def preprocess_array(rgb: np.ndarray, cfg: PreprocessConfig) -> PageArray:
    """`preprocess_image` of a uint8 (H, W, 3) RGB page array: the same bytes, without PIL."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if cfg.reads_leads:
        return _leads_array(rgb, cfg)
    crop: CropResult | None = None
    if cfg.crop == "auto":
        crop = find_trace_box(rgb, fallback_box=cfg.fallback_box)
    elif cfg.crop == "box":
        crop = _configured_box((rgb.shape[1], rgb.shape[0]), cfg)
    a = rgb
    if crop is not None:
        l, t, r, b = crop.box  # always inside the page: a slice is what PIL's crop copies
        a = a[t:b, l:r]
    if cfg.grayscale:
        a = pil_luma(a)
    a = cv2.resize(a, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA)
    return PageArray(np.ascontiguousarray(a), crop)


def _leads_array(rgb: np.ndarray, cfg: PreprocessConfig) -> PageArray:
    """The page reader's leads in the canonical layout (`ecgvit.reader.canonical`); the crop box is
    the union of the lead boxes (the whole page when the reader found none)."""
    traces = cfg.form == "traces"
    r = read_page(rgb, trace=not traces, keep_ink=traces)
    if traces:
        a = render_traces(r.ink if r.ink is not None else np.zeros(rgb.shape[:2], bool), r, cfg.height, cfg.width)
    else:
        a = render_signals(r.signals, cfg.height, cfg.width)
    if not cfg.grayscale:
        a = np.repeat(a[..., None], 3, axis=2)
    h, w = rgb.shape[:2]
    if r.leads:
        bx = np.array([b.box for b in r.leads], np.float64)
        box = (
            max(0, int(bx[:, 0].min())),
            max(0, int(bx[:, 1].min())),
            min(w, int(np.ceil(bx[:, 2].max()))),
            min(h, int(np.ceil(bx[:, 3].max()))),
        )
        if box[2] <= box[0] or box[3] <= box[1]:
            box = (0, 0, w, h)
    else:
        box = (0, 0, w, h)
    found = r.layout is not None
    crop = CropResult(box, found, f"page reader: {r.layout}" if found else "page reader: no layout found")
    r.ink = None
    r.signals = np.empty((12, 0), np.float32)  # not carried to the model or across processes
    return PageArray(np.ascontiguousarray(a), crop, r)


def _configured_box(size: tuple[int, int], cfg: PreprocessConfig) -> CropResult:
    l, t, r, b = cfg.fallback_box
    w, h = size
    return CropResult((round(l * w), round(t * h), round(r * w), round(b * h)), False, "configured box")


# PIL's RGB -> L weights (ITU-R 601-2 in 16-bit fixed point) as floats, plus its rounding half.
_LUMA = np.array([[19595 / 65536, 38470 / 65536, 7471 / 65536, 0.5]], np.float32)


def pil_luma(rgb: np.ndarray) -> np.ndarray:
    """PIL's `convert("L")` of a uint8 RGB array, bit for bit, with no PIL image made (a crop of
    a draft page: 0.31 ms against 0.53 for making a PIL image of it and converting that).

    PIL computes (19595 R + 38470 G + 7471 B + 32768) >> 16. Each weight is a multiple of
    2**-16 and every partial sum stays below 2**24 such units, so float32 holds each product
    and sum exactly, whatever the order; truncating to uint8 is then the shift (checked on all
    2**24 colours in tests/test_crop_preprocess.py). OpenCV's own RGB2GRAY rounds differently."""
    return cv2.transform(np.asarray(rgb, np.float32), _LUMA).astype(np.uint8)


def load_page_array(path: str | Path, cfg: PreprocessConfig = PreprocessConfig()) -> PageArray:
    """Decode `path` and preprocess it; raises BadImageError for unusable files."""
    page = open_page(path, draft_size=draft_size(cfg) if cfg.draft else None, as_array=True)
    if isinstance(page, DecodedPage):
        return preprocess_array(page.rgb, cfg)
    return preprocess_image(page, cfg)


# Part of the cache key beside the config: bump it when decoding changes what reaches the model
# (-d2: EXIF orientation applied; non-JPEG pages block-averaged to the JPEG draft scale).
DECODER_VERSION = "-d2"
# Also part of the key of the forms that read the leads: bump it when the page reader reads pages
# differently (-r2: the quick flatness gate, row ends inset by the trace's cap, text rows refused;
# -r3: a page that gives no layout read again with faint ink grown: thin traces; -r4: 6 rows are
# 3x4+3 too when the rhythm strips repeat the panels above them; -r5: a second retry for a grid
# as dark as the trace; -r6: a pulse searched past its row's band, up to the previous baseline;
# -r7: that retry keeps a trace lighter than the grid, and a third retry reads coloured ink only;
# -r8: cubic resampling when rotating, a raised ink threshold on coloured grids, retries for light
# grey ink and for a dark grid whose cores fall with the trace, rows closer than half the row pitch
# merged, quiet rows of low-gain leads taken as traces).
READER_VERSION = "-r8"


def model_input(arrays: np.ndarray) -> np.ndarray:
    """uint8 pages (N, H, W) or (N, H, W, 3) -> float32 (N, C, H, W), ink high, paper ~0.

    The one place the model input is computed (`ecgvit.models.prepare_batch` wraps it as a
    tensor). NumPy, not torch: on the ONNX Runtime path a torch operation would wake torch's
    thread pool, whose threads then spin on cores the decode threads need."""
    a = np.asarray(arrays)
    if a.dtype != np.uint8 or a.ndim not in (3, 4):
        raise ValueError(f"expected uint8 pages (N, H, W) or (N, H, W, C), got {a.dtype} {a.shape}")
    x = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    x = x.astype(np.float32)
    np.divide(x, np.float32(255.0), out=x)
    np.subtract(np.float32(1.0), x, out=x)
    return np.ascontiguousarray(x)


def default_cache_dir() -> Path:
    env = os.environ.get("ECGVIT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ecgvit"


class PageCache:
    """Preprocessed arrays on disk: ROOT/<config key>/<md5[:2]>/<md5>.npy (+ config.json)."""

    def __init__(self, cfg: PreprocessConfig = PreprocessConfig(), root: str | Path | None = None):
        self.cfg = cfg
        version = DECODER_VERSION + (READER_VERSION if cfg.reads_leads else "")
        self.dir = Path(root or default_cache_dir()) / "preprocess" / f"{cfg.key()}{version}"
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.dir / "config.json"
        if not cfg_file.exists():
            save_json(cfg_file, {"preprocess": to_dict(cfg)})
        self.hits = 0
        self.misses = 0

    def _file(self, md5: str) -> Path:
        return self.dir / md5[:2] / f"{md5}.npy"

    def get(self, path: str | Path, md5: str | None = None) -> np.ndarray:
        md5 = md5 or file_md5(path)
        f = self._file(md5)
        try:
            arr = np.load(f)
            self.hits += 1
            return arr
        except (FileNotFoundError, ValueError, OSError):
            pass  # missing or damaged entry: recompute
        arr = load_page_array(path, self.cfg).array
        self.put(md5, arr)
        self.misses += 1
        return arr

    def put(self, md5: str, arr: np.ndarray) -> None:
        f = self._file(md5)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        tmp.replace(f)  # atomic: a reader never sees half an array

    def contains(self, md5: str) -> bool:
        return self._file(md5).exists()


def _fill_one(args: tuple[str, str, PreprocessConfig, str]) -> str:
    path, md5, cfg, root = args
    PageCache(cfg, root).get(path, md5)
    return md5


def _fill_worker_init() -> None:
    """One OpenCV thread per cache-filling process: the processes are the parallelism, and
    OpenCV's own pool in each of them contends for the same cores (2 processes on 2 cores:
    71.8 against 69.0 pages/s, 10 interleaved fills of 200 Khan pages)."""
    import cv2

    cv2.setNumThreads(1)


def load_arrays(
    paths: Sequence[str | Path],
    md5s: Sequence[str] | None = None,
    cfg: PreprocessConfig = PreprocessConfig(),
    cache_root: str | Path | None = None,
    workers: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Stack the preprocessed arrays of `paths` (N, H, W[, 3]) through the cache.

    Missing entries are computed first, in `workers` processes (0: one per core, 1: inline).
    """
    from tqdm.auto import tqdm

    if md5s is None:
        md5s = [file_md5(p) for p in paths]
    cache = PageCache(cfg, cache_root)
    todo = {m: str(p) for p, m in zip(paths, md5s, strict=False) if not cache.contains(m)}
    workers = workers or (os.cpu_count() or 1)
    if todo:
        jobs = [(p, m, cfg, str(cache.dir.parent.parent)) for m, p in todo.items()]
        bar = tqdm(total=len(jobs), desc="preprocess", disable=not progress, unit="page")
        if workers > 1 and len(jobs) > 1:
            # spawn, not fork: forking after torch started its thread pool can deadlock the child.
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_fill_worker_init
            ) as ex:
                for _ in ex.map(_fill_one, jobs, chunksize=4):
                    bar.update()
        else:
            for j in jobs:
                _fill_one(j)
                bar.update()
        bar.close()
    if not paths:
        return np.zeros((0, cfg.height, cfg.width) + (() if cfg.grayscale else (3,)), dtype=np.uint8)
    return np.stack([cache.get(p, m) for p, m in zip(paths, md5s, strict=False)])


def iter_image_files(root: str | Path, suffixes: Iterable[str] | None = None) -> list[Path]:
    from ecgvit.data.io import IMAGE_SUFFIXES

    sfx = set(suffixes or IMAGE_SUFFIXES)
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in sfx)
