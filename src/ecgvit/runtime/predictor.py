"""`Predictor`: a model, the preprocessing recorded with it, its gate, and batching.

    from ecgvit import Predictor

    p = Predictor()                          # the bundled model; or Predictor("runs/train"), Predictor("model.onnx")
    preds = p.predict(["a.jpg", "scans/"])   # one `Prediction` per input, in input order

`Predictor` composes a backend (`ecgvit.runtime.backends`: ONNX Runtime or PyTorch), the input
reader (`ecgvit.runtime.inputs`), the out-of-scope gate (`ecgvit.runtime.gate`) and batching:
decode threads that run ahead of inference, or worker processes that run whole batches
(`ecgvit.runtime.pool`). Bad inputs never raise: they come back with status "bad" and a reason.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ecgvit.config import PreprocessConfig, from_dict
from ecgvit.data.io import MIN_SIDE, open_page
from ecgvit.data.preprocess import draft_size
from ecgvit.metrics import softmax
from ecgvit.run import LoadedRun, Run, bundled_names, bundled_run, is_run_dir, weights_digest
from ecgvit.runtime.backends import Backend, OnnxBackend, auto_backend
from ecgvit.runtime.gate import Gate, PageStructure, ReadingStructure, Verdict, load_gate, ungated
from ecgvit.runtime.inputs import (
    Loaded,
    LoadSpec,
    expand_inputs,
    failure_reason,
    is_single_input,
    load_input,
    load_input_safe,
)
from ecgvit.runtime.overlay import explain_by_occlusion, explain_leads
from ecgvit.runtime.pool import WorkerDied, WorkerPool
from ecgvit.runtime.prediction import Prediction

__all__ = ["EXPLAIN_METHODS", "NO_MODEL", "PROCESS_MIN_BATCHES", "Predictor", "one_thread_predictor"]

EXPLAIN_METHODS = ("auto", "rollout", "gradcam", "gradxinput", "occlusion", "leads")

NO_MODEL = (
    "no model: pass a RUN folder (config.json + model.safetensors) or an exported .onnx file as the first argument"
)
# Worker processes start from this many batches of files: below it the ~1 s pool start-up costs
# more than the processes win.
PROCESS_MIN_BATCHES = 8


def _positive(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


class Predictor:
    """A trained model plus its recorded preprocessing, ready to label pages.

    model: a run folder (config.json + model.safetensors), an exported .onnx file, or a
        `LoadedRun`; None: the model bundled with the package. onnx: an exported model to use
        instead of the PyTorch weights.
    backend: "auto" (ONNX Runtime when an ONNX model is given or RUN/model.onnx matches the
        run's weights, else PyTorch), "torch" or "onnx".
    threads: intra-op threads for PyTorch / ONNX Runtime (0: library default).
    workers: decoding threads that run ahead of inference (0: min(4, cores)).
    processes: for lists of files with an ONNX model, worker processes that each run the
        whole pipeline (decode, crop, gate measures, inference on one thread) on whole
        batches. 1 (default): never, decode threads feed one inference; 0: auto, one per core
        from PROCESS_MIN_BATCHES batches up (what `ecgvit predict` uses); N: N processes.
        Results are identical either way. The pool starts once (~1 s), is kept for later
        calls and ends with `close()` or at exit; workers die with this process. Workers are
        spawned, so they import your script's main module: a script that uses processes needs
        the usual `if __name__ == "__main__":` guard.
    """

    def __init__(
        self,
        model: str | Path | LoadedRun | None = None,
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
        self.threads = _positive("threads", threads, 0)
        self.batch_size = _positive("batch_size", batch_size, 1)
        self.workers = _positive("workers", workers, 0) or min(4, os.cpu_count() or 1)
        self.processes = _positive("processes", processes, 0)
        self.max_pixels = max_pixels
        self.min_side = min_side
        if isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx") and not Path(model).is_dir():
            if onnx is not None:
                raise ValueError("give the ONNX model once: as the model or as onnx=")
            model, onnx = None, model
        elif isinstance(model, str) and not is_run_dir(model) and model in bundled_names():
            model = bundled_run(model)  # a bundled model by name
        elif isinstance(model, (str, Path)) and not is_run_dir(model):
            if not Path(model).exists():
                raise FileNotFoundError(f"{model}: no such run folder")
            raise FileNotFoundError(f"{model}: not a training run (no config.json)")
        elif model is None and onnx is None:
            model = bundled_run()
            if model is None:
                raise ValueError(NO_MODEL)
        self.model_backend: Backend
        self.model_backend, self._torch = auto_backend(model, onnx, backend, self.threads)
        self.run: Path | None = self._torch.run if self._torch is not None else None
        self.meta: dict[str, Any] = self.model_backend.meta
        self.classes: list[str] = list(self.meta["classes"])
        self.preprocess: PreprocessConfig = from_dict(PreprocessConfig, self.meta["preprocess"])
        self.model_name: str = self.meta.get("model", {}).get("name", "unknown")
        self._draft = draft_size(self.preprocess) if self.preprocess.draft else None
        onnx_path = self.model_backend.path if isinstance(self.model_backend, OnnxBackend) else None
        self.onnx_path: Path | None = onnx_path
        # The out-of-scope gate fitted for these weights (RUN/gate.json; beside an .onnx file).
        self.gate: Gate | None = load_gate(
            self.run if self.run is not None else onnx_path.parent if onnx_path else None
        )
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._pool_key: tuple[int, int] | None = None
        self._side: ThreadPoolExecutor | None = None  # one thread: page measures beside the model
        self._side_lock = threading.Lock()
        self._explain_lock = threading.Lock()
        self._explain_model: Any = None
        self._digest: str | None = None

    @property
    def backend(self) -> str:
        """ "onnx" or "torch": what runs the model."""
        return self.model_backend.name

    @property
    def model_digest(self) -> str:
        """sha256 of the weights answering (an exported model counts as the weights it came from)."""
        if self._digest is None:
            if self.run is not None:  # RUN/model.onnx is used only while it matches these weights
                self._digest = weights_digest(Run(self.run).weights_file)
            else:
                assert self.onnx_path is not None
                exported = self.meta.get("export", {}).get("weights_sha256")
                self._digest = str(exported) if exported else weights_digest(self.onnx_path)
        return self._digest

    @property
    def torch_model(self) -> Any:
        """The PyTorch model (loaded on first use): explanations need it."""
        if self._torch is None:
            raise ValueError("this needs the PyTorch weights: pass the RUN folder, not only the .onnx file")
        return self._torch.model

    # -- inputs

    def _spec(self) -> LoadSpec:
        return LoadSpec(self.preprocess, self._draft, self.max_pixels, self.min_side, self.gate is not None)

    def load(self, item: Any, keep_image: bool = False) -> Loaded:
        """Decode + preprocess one input (path, bytes, PIL image or uint8 page array). The gate's
        page measures are taken when first read, or beside the model by `answer`."""
        return load_input(item, self._spec(), keep_image, defer_structure=True)

    # -- inference

    def infer(self, arrays: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for preprocessed uint8 arrays (N, H, W[, 3]);
        temperature-scaled when the model has a fitted gate."""
        logits, _ = self.infer_logits(arrays)
        return softmax(logits, self.gate.cfg.temperature if self.gate is not None else 1.0)

    def infer_logits(self, arrays: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (N, classes), pooled features (N, D) or None) in one forward pass."""
        if len(arrays) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32), None
        return self.model_backend.infer(arrays, features)

    def _verdicts(self, structures: list[Any], logits: np.ndarray, feats: np.ndarray | None) -> list[Verdict]:
        return ungated(logits) if self.gate is None else self.gate.assess(structures, logits, feats)

    def answer(self, ld: Loaded, name: str = "<input>") -> Prediction:
        """The full answer (status, reason, label, calibrated probabilities) for one loaded input."""
        logits, feats = self._infer_measuring(ld.array[None], [ld])
        return self._predictions([name], logits, feats, [ld])[0]

    def _infer_measuring(self, arrays: np.ndarray, loaded: list[Loaded]) -> tuple[np.ndarray, np.ndarray | None]:
        """`infer_logits`, with any page measures still pending taken meanwhile on a side
        thread: for one page the gate's measures then overlap the model's run on the other
        core instead of preceding it (the model and OpenCV release the GIL)."""
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

    def _predictions(
        self, names: list[str], logits: np.ndarray, feats: np.ndarray | None, loaded: list[Loaded]
    ) -> list[Prediction]:
        verdicts = self._verdicts([ld.structure for ld in loaded], logits, feats)
        out = []
        for name, v, ld in zip(names, verdicts, loaded, strict=True):
            k = int(np.argmax(v.probs))
            reason = v.reason
            if not reason and ld.crop_detected is False:
                reason = "grid not found; used the fallback crop box"
            oos = v.status == "out_of_scope"
            out.append(
                Prediction(
                    path=name,
                    status=v.status,
                    # An out-of-scope page gets no class: a label there would only be read as an answer.
                    label=None if oos else self.classes[k],
                    probability=None if oos else float(v.probs[k]),
                    probabilities=None if oos else {c: float(p) for c, p in zip(self.classes, v.probs, strict=True)},
                    reason=reason,
                    crop_box=list(ld.box),
                    feature_distance=None if v.feature_distance is None else round(v.feature_distance, 3),
                    trace_rows=v.structure.trace_rows if isinstance(v.structure, PageStructure) else None,
                    layout=v.structure.layout if isinstance(v.structure, ReadingStructure) else None,
                )
            )
        return out

    def _flush(self, names: list[str], results: list[Loaded | str]) -> list[Prediction]:
        """Predictions for one batch: the loaded inputs inferred together, the failures as rows."""
        rows: list[Prediction | None] = [
            Prediction.bad(n, r) if isinstance(r, str) else None for n, r in zip(names, results, strict=True)
        ]
        ok = [(j, r) for j, r in enumerate(results) if not isinstance(r, str)]
        if ok:
            loaded = [ld for _, ld in ok]
            logits, feats = self._infer_measuring(np.stack([ld.array for ld in loaded]), loaded)
            # A deferred measure that failed is that page's reason, as a failed decode is.
            keep = []
            for n, (j, ld) in enumerate(ok):
                try:
                    ld.structure  # noqa: B018
                    keep.append(n)
                except Exception as exc:
                    rows[j] = Prediction.bad(names[j], failure_reason(exc))
            if len(keep) < len(ok):
                ok = [ok[n] for n in keep]
                logits, feats = logits[keep], None if feats is None else feats[keep]
            for (j, _), p in zip(
                ok, self._predictions([names[j] for j, _ in ok], logits, feats, [ld for _, ld in ok]), strict=True
            ):
                rows[j] = p
        return [r for r in rows if r is not None]

    def _loaded_stream(self, items: list[Any], workers: int) -> Iterator[Loaded | str]:
        """Each input loaded (or its failure reason), in order; decoding runs ahead in threads."""
        spec = self._spec()
        if len(items) == 1:
            # One page (`ecgvit predict page.jpg`, a script's single call): its gate measures
            # run beside the model (see `_infer_measuring`); a failure there is this page's reason.
            yield load_input_safe(items[0], spec, defer_structure=True)
            return
        if workers == 1:
            for it in items:
                yield load_input_safe(it, spec)
            return
        # Decode threads feeding one inference (whole batches in processes: `_process_count`).
        ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecgvit-decode")
        window = max(2 * self.batch_size, 2 * workers)
        pending: deque[Future[Loaded | str]] = deque()
        todo = iter(items)
        try:

            def fill() -> None:
                for nxt in todo:
                    pending.append(ex.submit(load_input_safe, nxt, spec))
                    if len(pending) >= window:
                        return

            fill()
            while pending:
                fut = pending.popleft()
                fill()
                yield fut.result()
        finally:
            for fut in pending:  # stop queued work of an interrupted run
                fut.cancel()
            ex.shutdown(wait=False, cancel_futures=True)

    def iter_batches(
        self, items: Iterable[Any], batch_size: int | None = None, workers: int | None = None
    ) -> Iterator[list[Prediction]]:
        """Yield predictions batch by batch, in input order; decoding runs ahead in threads,
        or (long lists of files, ONNX) whole batches run in worker processes."""
        bs = _positive("batch_size", batch_size, 1) if batch_size is not None else self.batch_size
        nw = max(1, workers or self.workers)
        items = list(items)
        nproc = self._process_count(items, bs)
        if nproc > 1:
            yield from self._iter_batches_processes(items, bs, nproc)
            return
        names = [str(it) if isinstance(it, (str, Path)) else f"<input {i}>" for i, it in enumerate(items)]
        batch_names: list[str] = []
        batch: list[Loaded | str] = []
        n_loaded = 0
        for i, res in enumerate(self._loaded_stream(items, nw)):
            batch_names.append(names[i])
            batch.append(res)
            n_loaded += not isinstance(res, str)
            if n_loaded >= bs:
                yield self._flush(batch_names, batch)
                batch_names, batch, n_loaded = [], [], 0
        if batch:
            yield self._flush(batch_names, batch)

    def predict(self, items: Any, batch_size: int | None = None) -> list[Prediction]:
        """Label one input or a list of them (paths, PIL images, uint8 arrays, bytes): one
        `Prediction` per input, in input order (see `Prediction` for the statuses)."""
        if is_single_input(items):
            items = [items]
        out: list[Prediction] = []
        for b in self.iter_batches(items, batch_size):
            out.extend(b)
        return out

    def predict_paths(self, paths: Iterable[str | Path]) -> list[Prediction]:
        """Like `predict`, but files, folders (recursive) and globs are expanded first, and a name
        that matches nothing is a "bad" row rather than an error."""
        files, bad = expand_inputs(list(paths))
        return [Prediction.bad(b.path, b.reason) for b in bad] + self.predict(files)

    # -- worker processes

    def _process_count(self, items: list[Any], bs: int) -> int:
        """How many worker processes a call gets (1: none; see `processes`)."""
        if not isinstance(self.model_backend, OnnxBackend) or self.processes == 1:
            return 1
        if not all(isinstance(it, (str, Path)) for it in items):
            return 1  # bytes, images and arrays would have to be pickled across; threads it is
        if self.processes > 1:
            return self.processes
        cores = os.cpu_count() or 1
        return cores if cores > 1 and len(items) >= PROCESS_MIN_BATCHES * bs else 1

    def _process_pool(self, n: int, bs: int) -> WorkerPool:
        assert self.onnx_path is not None
        with self._lock:
            if self._pool is not None and self._pool_key != (n, bs):
                self._close_pool()
            if self._pool is None:
                args = (
                    str(self.run) if self.run is not None else None,
                    str(self.onnx_path),
                    bs,
                    self.max_pixels,
                    self.min_side,
                )
                self._pool, self._pool_key = WorkerPool(n, _worker_init, args), (n, bs)
            return self._pool

    def _iter_batches_processes(self, items: list[Any], bs: int, n: int) -> Iterator[list[Prediction]]:
        pool = self._process_pool(n, bs)
        chunks = [[str(p) for p in items[i : i + bs]] for i in range(0, len(items), bs)]
        try:
            yield from pool.map_ordered(_worker_batch, chunks)
        except WorkerDied:
            self._pool = None
            raise RuntimeError(
                "a prediction worker process died (out of memory?); the rows written so far are complete: rerun the rest with processes=1 / --processes 1"
            ) from None

    def _close_pool(self) -> None:
        pool, self._pool, self._pool_key = self._pool, None, None
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Stop the worker processes and the side thread, if any (also stopped when Python exits)."""
        self._close_pool()
        side, self._side = self._side, None
        if side is not None:
            side.shutdown(wait=True)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- explanations

    def explain(
        self, item: Any, out: str | Path | None = None, method: str = "auto", max_side: int = 1600
    ) -> tuple[Image.Image, dict[str, Any]]:
        """Heatmap of what drove the prediction, overlaid on the original page.

        method: "auto" (attention rollout for ViTs, Grad-CAM for CNNs, with PyTorch and the run's
        weights; occlusion otherwise), "rollout", "gradcam", "gradxinput" (PyTorch; see
        ecgvit.runtime.explain), "occlusion" (any backend, ONNX Runtime included; see
        ecgvit.runtime.overlay) or "leads" (models on the reader's leads, their default: each lead's
        panel blanked in turn, the loss drawn over the page's lead boxes)."""
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(EXPLAIN_METHODS)}")
        if self.preprocess.reads_leads and method == "auto":
            method = "leads"
        if method == "leads" and not self.preprocess.reads_leads:
            raise ValueError("explain method 'leads' needs a model on the page reader's leads (e.g. ecgvit-tiny-leads)")
        with_torch = (
            method not in ("occlusion", "leads")
            and self._torch is not None
            and importlib.util.find_spec("torch") is not None
        )
        if method not in ("auto", "occlusion", "leads") and not with_torch:
            raise ValueError(
                f'explain method {method!r} needs PyTorch and the run\'s weights (pip install "ecgvit[train]"); '
                "'occlusion' runs on ONNX Runtime"
            )
        # Read first: a bad upload is refused before PyTorch is imported for the heatmap.
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
        name = str(item) if isinstance(item, (str, Path)) else "<input>"
        with self._explain_lock:
            verdict = self.answer(ld, name)
            if verdict.status == "ok":
                title = None
            elif verdict.status == "low_confidence":
                title = f"{verdict.label}  p={verdict.probability:.2f}  (low confidence)"
            else:
                title = f"out of scope: {verdict.reason}"
            if method == "leads":
                img, info = explain_leads(self.infer, ld, self.classes, max_side=max_side, title=title)
            elif with_torch:
                from ecgvit.runtime.explain import explain_loaded

                if self._explain_model is None:
                    # A private copy: hooks and attention switches never touch the model serving predictions.
                    self._explain_model = copy.deepcopy(self.torch_model).eval()
                img, info = explain_loaded(
                    self._explain_model, ld, self.classes, method=method, max_side=max_side, title=title
                )
            else:
                img, info = explain_by_occlusion(self.infer, ld, self.classes, max_side=max_side, title=title)
        # The answer is the gate's (calibrated, maybe no label); the heatmap is still the model's view.
        info.update(
            {
                k: v
                for k, v in verdict.to_dict().items()
                if k in ("status", "reason", "label", "probability", "probabilities")
            }
        )
        info["path"] = name
        if out is not None:
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            img.save(out, format="PNG")
            info["heatmap"] = str(out)
        return img, info


# Worker processes: each holds one Predictor (one inference thread, no decode threads; cores
# are shared by the processes instead, the GIL-held parts of cropping and gating no longer
# waiting for each other).
_WORKER: Predictor | None = None


def one_thread_predictor(run: str | None, onnx: str | None, batch_size: int, **kw: Any) -> Predictor:
    """A Predictor for a worker process or a cluster actor: ONNX Runtime on one thread, no decode
    threads, and one thread in every library (OpenCV's pool, numpy's BLAS): the processes are the
    parallelism, and a library's own pool only contends for the same cores."""
    import cv2
    import scipy.signal  # noqa: F401  (the gate's peak finder: its own BLAS, limited below too)
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)
    return Predictor(run, onnx=onnx, backend="onnx", threads=1, workers=1, processes=1, batch_size=batch_size, **kw)


def _worker_init(run: str | None, onnx: str, bs: int, max_pixels: int, min_side: int) -> None:
    global _WORKER
    _WORKER = one_thread_predictor(run, onnx, bs, max_pixels=max_pixels, min_side=min_side)


def _worker_batch(paths: list[str]) -> list[Prediction]:
    assert _WORKER is not None, "worker not initialised"
    return [r for b in _WORKER.iter_batches(paths, batch_size=len(paths), workers=1) for r in b]


def _display_size(full: tuple[int, int], max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(full)) if max_side else 1.0
    return max(1, round(full[0] * s)), max(1, round(full[1] * s))
