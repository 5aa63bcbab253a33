"""Prediction: from page files (or PIL images, arrays, raw bytes) to labels and probabilities.

    ecgvit predict RUN PATH... [--out preds.csv|preds.json] [--explain DIR] [--batch-size B] [--threads T]

`Predictor` is the one Python entry point (the CLI and the web service both use it):

    p = Predictor("runs/train")            # or Predictor("model.onnx"), Predictor(run, onnx=...)
    rows = p.predict(["a.jpg", pil_image])  # list of dicts, one per input, in input order

Speed: JPEGs are decoded in draft mode (a reduced DCT scale, see ecgvit.data.preprocess) by a
thread pool that runs ahead of inference (PIL and OpenCV release the GIL), inference is batched,
and an exported ONNX model (RUN/model.onnx, or --onnx) runs under ONNX Runtime when present and
exported from the same weights. Every input uses the preprocessing recorded with the model.

Bad inputs never raise: they come back with status "bad" and a reason, and the rest go on.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ecgvit.config import PreprocessConfig, from_dict
from ecgvit.data.io import (
    INPUT_SUFFIXES,
    MIN_SIDE,
    MULTIPAGE_SUFFIXES,
    BadImageError,
    DecodedPage,
    count_pages,
    decode_checked,
    decode_pdf,
    is_pdf,
    open_page,
    page_array,
    split_page,
    to_rgb,
)
from ecgvit.data.preprocess import PageArray, _draft_size, preprocess_array, preprocess_image

__all__ = [
    "Predictor",
    "NO_MODEL",
    "is_run_dir",
    "expand_inputs",
    "open_image_bytes",
    "predict_files",
    "ResultWriter",
    "weights_digest",
]

NO_MODEL = (
    "no model: pass a RUN folder (config.json + model.safetensors) or an exported .onnx file as the first argument"
)
ONNX_META_KEY = "ecgvit_config"
# Pages per ONNX Runtime call (Predictor.infer_logits): `ecgvit predict` on 384 Khan pages, 2
# worker processes, 6 interleaved runs each: 115.1-122.7 pages/s (mean 119.5) against
# 113.3-117.1 (115.7) in one call per batch of 32; 1 and 2 measured alike, 8 in between.
ORT_CHUNK = 4


def is_run_dir(p: str | Path) -> bool:
    p = Path(p)
    return p.is_dir() and (p / "config.json").is_file()


def weights_digest(path: str | Path) -> str:
    """sha256 of a weights file: ties an exported ONNX model to the weights it came from."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- opening inputs -------------------------------------------------------------------------


def open_image_bytes(
    data: bytes,
    *,
    max_pixels: int = 100_000_000,
    min_side: int = MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
    name: str = "<upload>",
    page: int | None = None,
    as_array: bool = False,
) -> Image.Image | DecodedPage:
    """Decode an in-memory image like `open_page` does a file: RGB, or BadImageError with a reason.

    The format comes from the bytes (magic numbers), never from a file name. PDF bytes render
    one page (`page`, 1-based, default 1) at 200 dpi; `page` also picks a multi-page TIFF frame.
    EXIF orientation is applied. as_array: as in `open_page`.
    """
    if not data:
        raise BadImageError(name, "empty file (0 bytes)")
    kw = dict(max_pixels=max_pixels, min_side=min_side, draft_size=draft_size, page=page)
    if is_pdf(data[:1024]):
        return decode_pdf(bytes(data), name, **kw)
    # data=: a JPEG upload takes the fast draft decode, as a JPEG file does.
    return decode_checked(lambda: Image.open(io.BytesIO(data)), name, data=bytes(data), as_array=as_array, **kw)


def expand_inputs(paths: Sequence[str | Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """Files, folders (recursive, image and PDF suffixes) and globs -> (files in order, bad entries).

    A PDF or TIFF with more than one page becomes one entry per page, `f"{path}#page={i}"`
    (1-based); `path#page=N` may also be given directly. A path that does not exist or a glob
    that matches nothing is reported, not raised.
    """
    from ecgvit.data.preprocess import iter_image_files

    files: list[str] = []
    bad: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add_one(s: str) -> None:
        if s not in seen:
            seen.add(s)
            files.append(s)

    def add(f: Path) -> None:
        n = count_pages(f) if f.suffix.lower() in MULTIPAGE_SUFFIXES else None
        if n is not None and n > 1:
            for i in range(1, n + 1):
                add_one(f"{f}#page={i}")
        else:
            add_one(str(f))  # one page, or uncountable: opening it reports why

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = iter_image_files(p, INPUT_SUFFIXES)
            if not found:
                bad.append(_bad_row(str(p), f"folder has no image files ({', '.join(sorted(INPUT_SUFFIXES))})"))
            for f in found:
                add(f)
        elif p.exists():
            add(p)
        elif split_page(raw)[1] is not None and split_page(raw)[0].exists():
            add_one(str(raw))  # "doc.pdf#page=2": that page only
        elif glob.has_magic(str(raw)):
            matches = sorted(glob.glob(str(raw), recursive=True))
            if not matches:
                bad.append(_bad_row(str(raw), "no files match this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    for f in iter_image_files(mp, INPUT_SUFFIXES):
                        add(f)
                elif mp.suffix.lower() in INPUT_SUFFIXES:
                    add(mp)
        else:
            bad.append(_bad_row(str(raw), "no such file or folder"))
    return files, bad


def _bad_row(path: str, reason: str) -> dict[str, Any]:
    return {"path": path, "status": "bad", "label": None, "probability": None, "probabilities": None, "reason": reason}


@dataclass(frozen=True)
class LoadSpec:
    """How a Predictor reads an input: everything `load_input` needs (picklable, for workers)."""

    preprocess: PreprocessConfig
    draft: tuple[int, int] | None
    max_pixels: int
    min_side: int
    structure: bool  # measure the page structure for the out-of-scope gate


def load_input(item: Any, spec: LoadSpec, keep_image: bool = False, defer_structure: bool = False) -> Loaded:
    """Decode + preprocess one input (path, bytes, PIL image or uint8 page array).

    defer_structure: leave the gate's page measures to the first read of `Loaded.structure`,
    so that a caller can take them on another core while the model runs (`Predictor.answer`)."""
    cfg = spec.preprocess
    page: Image.Image | DecodedPage
    if isinstance(item, (str, Path)):
        page = open_page(item, max_pixels=spec.max_pixels, min_side=spec.min_side, draft_size=spec.draft, as_array=True)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        page = open_image_bytes(
            bytes(item), max_pixels=spec.max_pixels, min_side=spec.min_side, draft_size=spec.draft, as_array=True
        )
    elif isinstance(item, Image.Image):
        page = to_rgb(item)
        page.info.setdefault("full_size", page.size)
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise BadImageError("<array>", f"expected a uint8 page (H, W) or (H, W, 3), got {item.dtype} {item.shape}")
        page = to_rgb(Image.fromarray(item))
        page.info["full_size"] = page.size
    else:
        raise BadImageError(
            repr(type(item).__name__), "unsupported input type (give a path, bytes, PIL image or uint8 array)"
        )
    full = tuple(page.info.get("full_size", page.size))
    # One array view of the page for crop detection, cropping and the structure measures (each
    # PIL -> numpy conversion copies the page); a fast-decoded JPEG never becomes a PIL image.
    if isinstance(page, DecodedPage):
        rgb: np.ndarray | None = page.rgb
    else:
        rgb = page_array(page) if page.mode == "RGB" else None
    pa: PageArray = preprocess_array(rgb, cfg) if rgb is not None else preprocess_image(page, cfg)
    sx, sy = full[0] / page.size[0], full[1] / page.size[1]
    if pa.crop is None:
        box = (0, 0, full[0], full[1])
        detected = None
    else:
        l, t, r, b = pa.crop.box
        box = (round(l * sx), round(t * sy), round(r * sx), round(b * sy))
        detected = pa.crop.detected
    measure: Callable[[], Any] | None = None
    if spec.structure:
        from ecgvit.data.crop import find_trace_box
        from ecgvit.gate import page_structure

        src, crop = (rgb if rgb is not None else page), pa.crop

        def measure_page() -> Any:
            return page_structure(src, crop if crop is not None else find_trace_box(src))

        measure = measure_page
    image = None
    if keep_image:
        image = page.image() if isinstance(page, DecodedPage) else page
    ld = Loaded(pa.array, box, (int(full[0]), int(full[1])), detected, image)
    if measure is not None:
        if defer_structure:
            ld._measure = measure
        else:
            ld.structure = measure()
    return ld


def load_input_safe(item: Any, spec: LoadSpec, defer_structure: bool = False) -> Loaded | str:
    """`load_input`, with every failure turned into its reason (a broken file never stops a run)."""
    try:
        return load_input(item, spec, defer_structure=defer_structure)
    except Exception as exc:
        return failure_reason(exc)


def failure_reason(exc: Exception) -> str:
    """The reason a page could not be read, in the words of a result row."""
    if isinstance(exc, BadImageError):
        return exc.reason
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"preprocessing failed ({type(exc).__name__}: {exc})"


@dataclass
class Loaded:
    """A preprocessed input and where its crop lies on the original page."""

    array: np.ndarray  # uint8 model input (H, W) or (H, W, 3)
    box: tuple[int, int, int, int]  # crop box in ORIGINAL page pixels (left, top, right, bottom)
    full_size: tuple[int, int]  # original page (width, height)
    crop_detected: bool | None
    image: Image.Image | None = None  # the decoded RGB page (possibly a draft scale), when kept
    _structure: Any = field(default=None, repr=False)
    # The page measures not yet taken (`load_input(..., defer_structure=True)`): taken on first read.
    _measure: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def structure(self) -> Any:
        """ecgvit.gate.PageStructure, measured when the model has a gate (else None)."""
        if self._measure is not None:
            self._structure, self._measure = self._measure(), None
        return self._structure

    @structure.setter
    def structure(self, value: Any) -> None:
        self._structure, self._measure = value, None

    @property
    def structure_pending(self) -> bool:
        return self._measure is not None


# --- the predictor --------------------------------------------------------------------------


class Predictor:
    """A trained model plus its recorded preprocessing, ready to label pages.

    model: a run folder (config.json + model.safetensors), an exported .onnx file, or a
        `LoadedRun`. onnx: an exported model to use instead of the PyTorch weights.
    backend: "auto" (ONNX Runtime when an ONNX model is given or RUN/model.onnx matches the
        run's weights, else PyTorch), "torch" or "onnx".
    threads: intra-op threads for PyTorch / ONNX Runtime (0: library default).
    workers: decoding threads that run ahead of inference (0: min(4, cores)).
    processes: for lists of files with an ONNX model, worker processes that each run the
        whole pipeline (decode, crop, gate measures, inference on one thread) on whole
        batches: ~8-12 % more pages/s than threads on 2 cores. 1 (default): never, decode
        threads feed one inference; 0: auto, one per core from PROCESS_MIN_BATCHES batches
        up (what `ecgvit predict` uses); N: N processes. Results are identical either way.
        The pool starts once (~1 s), is kept for later calls and ends with `close()` or
        at exit. Workers are spawned, so they import your script's main module: a script
        that uses processes needs the usual `if __name__ == "__main__":` guard.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        onnx: str | Path | None = None,
        backend: str = "auto",
        threads: int = 0,
        batch_size: int = 16,
        workers: int = 0,
        processes: int = 1,
        max_pixels: int = 100_000_000,
        min_side: int = MIN_SIDE,
    ):
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend={backend!r}: expected 'auto', 'torch' or 'onnx'")
        self.threads = int(threads)
        self.batch_size = max(1, int(batch_size))
        self.workers = int(workers) or min(4, os.cpu_count() or 1)
        if int(processes) < 0:
            raise ValueError(f"processes={processes}: expected 0 (auto), 1 (none) or more")
        self.processes = int(processes)
        self._pool: Any = None  # (ProcessPoolExecutor, its size, batch size)
        self._side: ThreadPoolExecutor | None = None  # one thread: page measures beside the model
        self._side_lock = threading.Lock()
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.run: Path | None = None
        self._loaded: Any = None  # ecgvit.evaluate.LoadedRun once the PyTorch weights are loaded
        self._ort = None
        self._lock = threading.Lock()
        self._explain_lock = threading.Lock()
        self._explain_model = None

        # A LoadedRun exists only once ecgvit.evaluate (and torch) is imported: an ONNX-only
        # predictor, e.g. in a worker process, never pays for importing torch.
        evaluate = sys.modules.get("ecgvit.evaluate")
        if evaluate is not None and isinstance(model, evaluate.LoadedRun):
            self._loaded = model
            self._set_torch_threads()
            self.run = Path(model.path)
            self.meta = model.meta
        elif model is not None and str(model).lower().endswith(".onnx") and not Path(model).is_dir():
            if onnx is not None:
                raise ValueError("give the ONNX model once: as the model or as onnx=")
            onnx = model
        elif model is not None:
            if not is_run_dir(model):
                if not Path(model).exists():
                    raise FileNotFoundError(f"{model}: no such run folder")
                raise FileNotFoundError(f"{model}: not a training run (no config.json)")
            self.run = Path(model)
            self.meta = json.loads((self.run / "config.json").read_text())
        elif onnx is None:
            raise ValueError(NO_MODEL)

        if onnx is None and self.run is not None and backend != "torch":
            cand = self.run / "model.onnx"
            if cand.exists():
                if _onnx_matches_run(cand, self.run):
                    onnx = cand
                elif backend == "onnx":
                    raise ValueError(
                        f"{cand} was exported from other weights than {self.run}/model.safetensors: run `ecgvit export {self.run}` again"
                    )
                else:
                    print(
                        f"ecgvit: {cand} is out of date (exported from other weights); using PyTorch", file=sys.stderr
                    )
        if backend == "onnx" and onnx is None:
            raise ValueError(f"backend 'onnx' needs an exported model: run `ecgvit export {self.run or 'RUN'}` first")
        if onnx is not None and backend != "torch":
            self._open_onnx(Path(onnx))
        elif self._loaded is None and self.run is not None:
            self._load_torch()
        self.backend = "onnx" if self._ort is not None else "torch"
        self.classes: list[str] = list(self.meta["classes"])
        self.preprocess: PreprocessConfig = from_dict(PreprocessConfig, self.meta["preprocess"])
        self.model_name: str = self.meta.get("model", {}).get("name", "unknown")
        self._draft = _draft_size(self.preprocess) if self.preprocess.draft else None
        from ecgvit.gate import load_gate

        # The out-of-scope gate fitted for these weights (RUN/gate.json; beside an .onnx file).
        self.gate = load_gate(self.run if self.run is not None else (Path(onnx).parent if onnx is not None else None))
        self._ort_features = self._ort is not None and len(self._ort.get_outputs()) > 1

    # -- backends

    def _load_torch(self):
        from ecgvit.evaluate import load_run

        if self._loaded is None:
            if self.run is None:
                raise ValueError("this needs the PyTorch weights: pass the RUN folder, not only the .onnx file")
            self._set_torch_threads()
            self._loaded = load_run(self.run)
        return self._loaded

    def _set_torch_threads(self) -> None:
        """Applied when PyTorch weights arrive, not before: an ONNX-only predictor never imports torch."""
        if self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)

    def _open_onnx(self, path: Path) -> None:
        import onnxruntime as ort

        if not path.exists():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        so = ort.SessionOptions()
        if self.threads > 0:
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between ops: the decode threads need those cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None
        meta = read_onnx_config(path, sess)
        if meta is None:
            if self.run is None:
                raise ValueError(
                    f"{path}: no ecgvit config embedded or beside it ({path}.json); export it with `ecgvit export RUN`"
                )
            meta = self.meta
        if self.run is not None and list(meta["classes"]) != list(self.meta["classes"]):
            raise ValueError(f"{path}: classes {meta['classes']} differ from the run's {self.meta['classes']}")
        if self.run is None:
            self.meta = meta
        self._ort = sess
        self._ort_input = sess.get_inputs()[0].name
        self.onnx_path = path

    @property
    def torch_model(self):
        return self._load_torch().model

    # -- inputs

    def _spec(self) -> LoadSpec:
        return LoadSpec(self.preprocess, self._draft, self.max_pixels, self.min_side, self.gate is not None)

    def load(self, item: Any, keep_image: bool = False) -> Loaded:
        """Decode + preprocess one input (path, bytes, PIL image or uint8 page array). The gate's
        page measures are taken when first read, or beside the model by `answer`."""
        return load_input(item, self._spec(), keep_image, defer_structure=True)

    def _load_safe(self, item: Any, defer_structure: bool = False) -> Loaded | str:
        return load_input_safe(item, self._spec(), defer_structure)

    # -- inference

    def infer(self, arrays: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, classes) for preprocessed uint8 arrays (N, H, W[, 3]);
        temperature-scaled when the model has a fitted gate."""
        logits, _ = self.infer_logits(arrays)
        return _softmax(logits / (self.gate.cfg.temperature if self.gate is not None else 1.0))

    def infer_logits(self, arrays: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (N, classes), pooled features (N, D) or None) in one forward pass."""
        if len(arrays) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32), None
        if self._ort is not None:
            from ecgvit.data.preprocess import model_input

            # NumPy, not torch: a torch operation here wakes torch's thread pool, whose
            # threads then spin on the cores the decode threads need (~6 % of pages/s).
            x = model_input(arrays)
            # In chunks of ORT_CHUNK pages: a few pages' activations stay in the CPU cache. One
            # thread: 4.2-4.5 ms a page at 1-8 pages a call, 5.1 at 32; the same logits.
            outs = [self._ort.run(None, {self._ort_input: x[i : i + ORT_CHUNK]}) for i in range(0, len(x), ORT_CHUNK)]
            logits = np.concatenate([o[0] for o in outs])
            feats = np.concatenate([o[1] for o in outs]) if features and len(outs[0]) > 1 else None
            return logits, feats
        import torch

        from ecgvit.models import WithFeatures, prepare_batch

        x = prepare_batch(arrays)

        model = self.torch_model
        with torch.inference_mode():
            if features:
                logits, feats = WithFeatures(model)(x)
                return logits.float().numpy(), feats.float().numpy()
            return model(x).float().numpy(), None

    def answer(self, ld: Loaded, name: str = "<input>") -> dict[str, Any]:
        """The full answer (status, reason, label, calibrated probabilities) for one loaded input."""
        logits, feats = self._infer_measuring(ld.array[None], [ld])
        return self._rows([name], logits, feats, [ld])[0]

    def _infer_measuring(self, arrays: np.ndarray, loaded: list[Loaded]) -> tuple[np.ndarray, np.ndarray | None]:
        """`infer_logits`, with any page measures still pending taken meanwhile on a side
        thread: for one page the gate's measures (~1.6-2.4 ms) then overlap the model's run on
        the other core instead of preceding it (the model and OpenCV release the GIL)."""
        pending = [ld for ld in loaded if ld.structure_pending]
        # Busy (another request of a server is using it): no queueing behind it, measure inline
        # when the rows read them.
        if not pending or not self._side_lock.acquire(blocking=False):
            return self.infer_logits(arrays, features=self.gate is not None)
        try:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecgvit-measure")

            def measure() -> None:
                for ld in pending:
                    try:
                        ld.structure  # noqa: B018  (taken and kept)
                    except Exception:
                        pass  # left pending: the caller meets the error again where it reads it

            fut = self._side.submit(measure)
            try:
                return self.infer_logits(arrays, features=self.gate is not None)
            finally:
                fut.result()
        finally:
            self._side_lock.release()

    def _rows(
        self, names: list[str], logits: np.ndarray, feats: np.ndarray | None, loaded: list[Loaded]
    ) -> list[dict[str, Any]]:
        if self.gate is None:
            verdicts = [
                {"status": "ok", "reason": "", "probs": p, "feature_distance": None, "structure": None}
                for p in _softmax(logits)
            ]
        else:
            verdicts = self.gate.assess([ld.structure for ld in loaded], logits, feats)
        rows = []
        for name, v, ld in zip(names, verdicts, loaded, strict=False):
            probs = v["probs"]
            k = int(np.argmax(probs))
            reason = v["reason"]
            if not reason and ld.crop_detected is False:
                reason = "grid not found; used the fallback crop box"
            oos = v["status"] == "out_of_scope"
            row = {
                "path": name,
                "status": v["status"],
                # An out-of-scope page gets no class: a label there would only be read as an answer.
                "label": None if oos else self.classes[k],
                "probability": None if oos else float(probs[k]),
                "probabilities": None if oos else {c: float(p) for c, p in zip(self.classes, probs, strict=False)},
                "reason": reason,
                "crop_box": list(ld.box),
            }
            if v.get("feature_distance") is not None:
                row["feature_distance"] = round(v["feature_distance"], 3)
            if v.get("structure") is not None:
                row["trace_rows"] = v["structure"]["trace_rows"]
            rows.append(row)
        return rows

    def iter_batches(
        self, items: Iterable[Any], batch_size: int | None = None, workers: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield result rows batch by batch, in input order; decoding runs ahead in threads,
        or (long lists of files, ONNX) whole batches run in worker processes."""
        bs = max(1, batch_size or self.batch_size)
        nw = max(1, workers or self.workers)
        items = list(items)
        nproc = self._process_count(items, bs)
        if nproc > 1:
            yield from self._iter_batches_processes(items, bs, nproc)
            return
        names = [str(it) if isinstance(it, (str, Path)) else f"<input {i}>" for i, it in enumerate(items)]
        rows: list[dict[str, Any] | None] = []
        ok: list[tuple[int, Loaded]] = []

        def flush() -> list[dict[str, Any]]:
            nonlocal rows, ok
            if ok:
                logits, feats = self._infer_measuring(np.stack([ld.array for _, ld in ok]), [ld for _, ld in ok])
                # A deferred measure that failed is that page's reason, as a failed decode is.
                keep = []
                for n, (j, ld) in enumerate(ok):
                    try:
                        ld.structure  # noqa: B018
                        keep.append(n)
                    except Exception as exc:
                        rows[j] = _bad_row(names_in_batch[j], failure_reason(exc))
                if len(keep) < len(ok):
                    ok = [ok[n] for n in keep]
                    logits, feats = logits[keep], None if feats is None else feats[keep]
                for (j, _), row in zip(
                    ok,
                    self._rows([names_in_batch[j] for j, _ in ok], logits, feats, [ld for _, ld in ok]),
                    strict=False,
                ):
                    rows[j] = row
            out = [r for r in rows if r is not None]
            rows, ok = [], []
            names_in_batch.clear()
            return out

        names_in_batch: list[str] = []
        if len(items) == 1:
            # One page (`ecgvit predict page.jpg`, a script's single call): its gate measures
            # run beside the model (see `_infer_measuring`); a failure there is this page's reason.
            results: Iterator[Loaded | str] = iter([self._load_safe(items[0], defer_structure=True)])
            ex = None
        elif nw == 1 or not items:
            results = (self._load_safe(it) for it in items)
            ex = None
        else:
            spec = self._spec()
            # Decode threads feeding one inference. Processes that only decode gave no more
            # pages/s (72.5 vs 74 on 2 cores, PyTorch then); processes that run whole batches,
            # inference included, do (~8-12 %): that is `processes`, above.
            ex = ThreadPoolExecutor(max_workers=nw, thread_name_prefix="ecgvit-decode")
            window = max(2 * bs, 2 * nw)
            pending: deque = deque()
            it_iter = iter(items)

            def gen() -> Iterator[Loaded | str]:
                def fill() -> None:
                    while len(pending) < window:
                        try:
                            nxt = next(it_iter)
                        except StopIteration:
                            return
                        pending.append(ex.submit(load_input_safe, nxt, spec))

                fill()
                while pending:
                    fut = pending.popleft()
                    fill()
                    yield fut.result()

            results = gen()
        try:
            for i, res in enumerate(results):
                names_in_batch.append(names[i])
                if isinstance(res, str):
                    rows.append(_bad_row(names[i], res))
                else:
                    rows.append(None)
                    ok.append((len(rows) - 1, res))
                if len(ok) >= bs:
                    yield flush()
            if rows:
                yield flush()
        finally:
            if ex is not None:
                for fut in pending:  # stop queued work of an interrupted run
                    fut.cancel()
                ex.shutdown(wait=False, cancel_futures=True)

    # -- worker processes

    def _process_count(self, items: list[Any], bs: int) -> int:
        """How many worker processes a call gets (1: none; see `processes`)."""
        if self._ort is None or self.processes == 1:
            return 1
        if not all(isinstance(it, (str, Path)) for it in items):
            return 1  # bytes, images and arrays would have to be pickled across; threads it is
        if self.processes > 1:
            return self.processes
        cores = os.cpu_count() or 1
        return cores if cores > 1 and len(items) >= PROCESS_MIN_BATCHES * bs else 1

    def _worker_args(self, bs: int) -> tuple[Any, ...]:
        return (
            str(self.run) if self.run is not None else None,
            str(self.onnx_path),
            bs,
            self.max_pixels,
            self.min_side,
        )

    def _process_pool(self, n: int, bs: int) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with self._lock:
            if self._pool is not None and self._pool[1:] != (n, bs):
                self.close()
            if self._pool is None:
                # spawn, not fork: this process may hold ONNX Runtime / OpenMP thread pools,
                # which a forked child would inherit in an undefined state.
                ex = ProcessPoolExecutor(
                    n,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init,
                    initargs=self._worker_args(bs),
                )
                self._pool = (ex, n, bs)
            return self._pool[0]

    def _iter_batches_processes(self, items: list[Any], bs: int, n: int) -> Iterator[list[dict[str, Any]]]:
        from concurrent.futures.process import BrokenProcessPool

        ex = self._process_pool(n, bs)
        chunks = [[str(p) for p in items[i : i + bs]] for i in range(0, len(items), bs)]
        pending: deque = deque()
        it = iter(chunks)
        try:
            for c in it:  # keep 2 batches per process in flight: enough to never idle, little to cancel
                pending.append(ex.submit(_worker_batch, c))
                if len(pending) >= 2 * n:
                    break
            while pending:
                rows = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(_worker_batch, nxt))
                yield rows
        except BrokenProcessPool:
            self._pool = None
            raise RuntimeError(
                "a prediction worker process died (out of memory?); the rows written so far are complete: rerun the rest with processes=1 / --processes 1"
            ) from None
        finally:
            for f in pending:  # an interrupted run stops its queued batches
                f.cancel()

    def close(self) -> None:
        """Stop the worker processes, if any (they are also stopped when Python exits)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool[0].shutdown(wait=True, cancel_futures=True)
        side, self._side = self._side, None
        if side is not None:
            side.shutdown(wait=True)

    def predict(self, items: Any, batch_size: int | None = None) -> list[dict[str, Any]]:
        """Label one input or a list of them (paths, PIL images, uint8 arrays, bytes).

        Returns one dict per input: path, status ("ok", "low_confidence", "out_of_scope" or
        "bad"), label (None unless ok/low_confidence), probability, probabilities {class: p}
        (temperature-scaled when the model has a gate), reason, crop_box (on the original page).
        """
        if isinstance(items, (str, Path, bytes, bytearray, Image.Image)) or (
            isinstance(items, np.ndarray)
            and items.ndim in (2, 3)
            and items.dtype == np.uint8
            and (items.ndim == 2 or items.shape[2] in (3, 4))
        ):
            items = [items]
        out: list[dict[str, Any]] = []
        for b in self.iter_batches(items, batch_size):
            out.extend(b)
        return out

    # -- explanations

    def explain(
        self, item: Any, out: str | Path | None = None, method: str = "auto", max_side: int = 1600
    ) -> tuple[Image.Image, dict[str, Any]]:
        """Heatmap of what drove the prediction, overlaid on the original page (see ecgvit.explain)."""
        from ecgvit.explain import explain_loaded

        ld = self.load(item, keep_image=True)
        if (
            isinstance(item, (str, Path))
            and max_side
            and ld.image is not None
            and max(ld.image.size) < min(max_side, max(ld.full_size))
        ):
            # The draft-decoded copy is smaller than the picture wanted: decode the page again, bigger.
            ld.image = open_page(
                item,
                max_pixels=self.max_pixels,
                min_side=self.min_side,
                draft_size=_display_size(ld.full_size, max_side),
            )
        with self._explain_lock:
            if self._explain_model is None:
                import copy

                # A private copy: hooks and attention switches never touch the model serving predictions.
                self._explain_model = copy.deepcopy(self.torch_model).eval()
            name = str(item) if isinstance(item, (str, Path)) else "<input>"
            verdict = self.answer(ld, name)
            if verdict["status"] == "ok":
                title = None
            elif verdict["status"] == "low_confidence":
                title = f"{verdict['label']}  p={verdict['probability']:.2f}  (low confidence)"
            else:
                title = f"out of scope: {verdict['reason']}"
            img, info = explain_loaded(
                self._explain_model, ld, self.classes, method=method, max_side=max_side, title=title
            )
        # The answer is the gate's (calibrated, maybe no label); the heatmap is still the model's view.
        info.update({k: verdict[k] for k in ("status", "reason", "label", "probability", "probabilities")})
        info["path"] = name
        if out is not None:
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            img.save(out, format="PNG")
            info["heatmap"] = str(out)
        return img, info


# Worker processes: each holds one Predictor (one inference thread, no decode threads; cores
# are shared by the processes instead, which measured ~8-12 % more pages/s than threads on 2 cores,
# the GIL-held parts of cropping and gating no longer waiting for each other).
PROCESS_MIN_BATCHES = 8
_WORKER: Predictor | None = None


def _worker_init(run: str | None, onnx: str, bs: int, max_pixels: int, min_side: int) -> None:
    global _WORKER
    # One thread per worker in every library: the processes are the parallelism, and a
    # library's own pool (OpenCV's, numpy's BLAS) only contends for the same cores. With
    # OpenCV's two threads left on: 62.4 against 64.5 pages/s (18 interleaved runs each).
    import cv2
    import scipy.signal  # noqa: F401  (the gate's peak finder: its own BLAS, limited below too)
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)
    _WORKER = Predictor(
        run,
        onnx=onnx,
        backend="onnx",
        threads=1,
        workers=1,
        processes=1,
        batch_size=bs,
        max_pixels=max_pixels,
        min_side=min_side,
    )


def _worker_batch(paths: list[str]) -> list[dict[str, Any]]:
    assert _WORKER is not None, "worker not initialised"
    return [r for b in _WORKER.iter_batches(paths, batch_size=len(paths), workers=1) for r in b]


def _display_size(full: tuple[int, int], max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(full)) if max_side else 1.0
    return max(1, round(full[0] * s)), max(1, round(full[1] * s))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def read_onnx_config(path: Path, sess: Any = None) -> dict[str, Any] | None:
    """The ecgvit config embedded in an exported model, else the sidecar PATH.json, else None."""
    if sess is not None:
        raw = sess.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        if raw:
            return json.loads(raw)
    side = Path(str(path) + ".json")
    if side.exists():
        return json.loads(side.read_text())
    return None


def _onnx_matches_run(onnx_path: Path, run: Path) -> bool:
    """True when RUN/model.onnx was exported from RUN/model.safetensors as it is now."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    side = Path(str(onnx_path) + ".json")
    meta = json.loads(side.read_text()) if side.exists() else None
    if meta is None:
        try:
            import onnx

            m = onnx.load(str(onnx_path), load_external_data=False)
            raw = {p.key: p.value for p in m.metadata_props}.get(ONNX_META_KEY)
            meta = json.loads(raw) if raw else None
        except Exception:
            return False
    want = (meta or {}).get("export", {}).get("weights_sha256")
    w = run / "model.safetensors"
    return bool(want) and w.exists() and weights_digest(w) == want


# --- writing results ------------------------------------------------------------------------


class ResultWriter:
    """Results as they come: CSV rows appended and flushed per batch; JSON written at the end
    with a PATH.partial.jsonl beside it while running (kept if the run dies)."""

    def __init__(self, out: str | Path, classes: list[str], model: str = ""):
        self.out = Path(out)
        self.classes = classes
        self.model = model
        self.rows: list[dict[str, Any]] = []
        suffix = self.out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ValueError(f"--out {out}: expected a .csv or .json file")
        self.kind = suffix[1:]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "csv":
            self._f = open(self.out, "w", newline="")
            self._w = csv.writer(self._f)
            self._w.writerow(["path", "status", "label", "probability", *[f"p_{c}" for c in classes], "reason"])
            self._f.flush()
        else:
            self.partial = self.out.with_name(self.out.name + ".partial.jsonl")
            self._f = open(self.partial, "w")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        for r in rows:
            if self.kind == "csv":
                probs = r.get("probabilities") or {}
                self._w.writerow(
                    [
                        r["path"],
                        r["status"],
                        r.get("label") or "",
                        "" if r.get("probability") is None else f"{r['probability']:.6f}",
                        *["" if c not in probs else f"{probs[c]:.6f}" for c in self.classes],
                        r.get("reason", ""),
                    ]
                )
            else:
                self._f.write(json.dumps(r) + "\n")
        self._f.flush()

    def close(self, summary: dict[str, Any], complete: bool = True) -> None:
        self._f.close()
        if self.kind == "json":
            doc = {
                "model": self.model,
                "classes": self.classes,
                "complete": complete,
                "summary": summary,
                "predictions": self.rows,
            }
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            tmp.replace(self.out)
            self.partial.unlink(missing_ok=True)


def summarize(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    answered = [r for r in rows if r["status"] in ("ok", "low_confidence")]
    counts = Counter(r["status"] for r in rows)
    return {
        "images": len(rows),
        "ok": counts.get("ok", 0),
        "low_confidence": counts.get("low_confidence", 0),
        "out_of_scope": counts.get("out_of_scope", 0),
        "bad": counts.get("bad", 0),
        "labels": dict(Counter(r["label"] for r in answered)),
        "seconds": round(seconds, 3),
        "images_per_s": round((len(rows) - counts.get("bad", 0)) / seconds, 2) if seconds > 0 else None,
    }


def format_table(rows: list[dict[str, Any]], summary: dict[str, Any], limit: int = 20) -> str:
    def short(p: str, n: int = 44) -> str:
        return p if len(p) <= n else "..." + p[-(n - 3) :]

    lines = [f"{'path':<46}{'label':<24}{'p':>6}  note"]
    for r in rows[:limit]:
        if r["status"] in ("ok", "low_confidence"):
            note = r.get("reason", "") if r["status"] == "ok" else f"LOW CONFIDENCE: {r.get('reason', '')}"
            lines.append(f"{short(r['path']):<46}{r['label']:<24}{r['probability']:>6.2f}  {note}")
        elif r["status"] == "out_of_scope":
            lines.append(f"{short(r['path']):<46}{'(out of scope)':<24}{'':>6}  {r['reason']}")
        else:
            lines.append(f"{short(r['path']):<46}{'(bad)':<24}{'':>6}  {r['reason']}")
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["labels"].items()))
    speed = f", {summary['images_per_s']:.1f} images/s" if summary.get("images_per_s") else ""
    lines.append(
        f"{summary['images']} inputs: {summary['ok'] + summary['low_confidence']} labelled ({counts or 'none'}; "
        f"{summary['low_confidence']} low confidence), {summary['out_of_scope']} out of scope, {summary['bad']} bad{speed}"
    )
    return "\n".join(lines)


def split_model_and_paths(inputs: Sequence[str], onnx: str | None = None) -> tuple[str | None, list[str]]:
    """`ecgvit predict [RUN|MODEL.onnx] PATH...`: the first argument is the model when it is a run
    folder (has config.json) or an .onnx file; otherwise every argument is an input."""
    inputs = list(inputs)
    if inputs and (is_run_dir(inputs[0]) or (inputs[0].lower().endswith(".onnx") and Path(inputs[0]).is_file())):
        return inputs[0], inputs[1:]
    if onnx is None:
        # No model named: the one shipped inside the package, when this install has it.
        from ecgvit.bundled import bundled_run

        bundled = bundled_run()
        if bundled is None:
            raise ValueError(NO_MODEL)
        return str(bundled), inputs
    return None, inputs


def predict_files(
    model: str | Path | None,
    paths: Sequence[str],
    *,
    out: str | Path | None = None,
    explain_dir: str | Path | None = None,
    onnx: str | Path | None = None,
    backend: str = "auto",
    batch_size: int = 16,
    threads: int = 0,
    workers: int = 0,
    processes: int = 1,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The `ecgvit predict` pipeline: expand inputs, predict in batches, write as it goes.

    processes: see `Predictor` (the CLI passes 0, auto)."""
    if not paths:
        raise ValueError("no images given: ecgvit predict RUN PATH... (files, folders or globs)")
    pred = predictor or Predictor(
        model, onnx=onnx, backend=backend, threads=threads, batch_size=batch_size, workers=workers, processes=processes
    )
    if explain_dir is not None:
        pred._load_torch()  # fail now, not after the first batch, when only an .onnx was given
    files, bad = expand_inputs(paths)
    writer = ResultWriter(out, pred.classes, pred.model_name) if out else None
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    complete = False
    used_names: set[str] = set()
    try:
        if bad:
            rows.extend(bad)
            if writer:
                writer.write(bad)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(files), unit="page", desc="predict", disable=not progress or len(files) < 2, file=sys.stderr
        )
        for batch in pred.iter_batches(files, batch_size=batch_size):
            if explain_dir is not None:
                for r in batch:
                    if r["status"] in ("ok", "low_confidence"):
                        name = _unique_name(Path(r["path"]).stem, used_names)
                        try:
                            _, info = pred.explain(r["path"], out=Path(explain_dir) / f"{name}.png")
                            r["heatmap"] = info["heatmap"]
                        except Exception as exc:  # an explanation failing must not lose the prediction
                            r["reason"] = (
                                r["reason"] + "; " if r["reason"] else ""
                            ) + f"no heatmap ({type(exc).__name__}: {exc})"
            rows.extend(batch)
            if writer:
                writer.write(batch)
            bar.update(len(batch))
        bar.close()
        complete = True
    finally:
        secs = time.perf_counter() - t0
        summary = summarize(rows, secs)
        summary["backend"] = pred.backend
        summary["complete"] = complete
        if writer:
            writer.close(summary, complete=complete)
        if predictor is None:
            pred.close()
    return rows, summary


def _unique_name(stem: str, used: set[str]) -> str:
    name, i = stem, 2
    while name in used:
        name = f"{stem}_{i}"
        i += 1
    used.add(name)
    return name
