"""Inference backends behind one small interface, chosen by `auto_backend` (ultralytics' AutoBackend).

    backend.infer(arrays, features) -> (logits (N, classes), pooled features (N, D) or None)

`OnnxBackend` runs an exported model under ONNX Runtime and never imports torch; `TorchBackend`
runs a run's PyTorch weights (loaded on first use). Both take the uint8 arrays the preprocessing
makes and feed the model the same float input (`ecgvit.data.preprocess.model_input`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ecgvit.data.preprocess import model_input
from ecgvit.run import LoadedRun, Run, RunError, load_run, read_onnx_config

__all__ = ["ORT_CHUNK", "Backend", "OnnxBackend", "TorchBackend", "auto_backend", "onnxruntime_available"]

log = logging.getLogger("ecgvit")

# Pages per ONNX Runtime call: a few pages' activations stay in the CPU cache (one call per
# page up to 8 measured alike; one call for a whole batch of 32 was slower), the same logits.
ORT_CHUNK = 4


class Backend(Protocol):
    name: str
    meta: dict[str, Any]  # the run's config: classes, preprocessing, model

    def infer(self, arrays: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]: ...


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxBackend:
    """An exported model (`ecgvit export`) under ONNX Runtime, on the CPU."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int = 0, meta: dict[str, Any] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        so = ort.SessionOptions()
        if threads > 0:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between ops: the decode threads need those cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RunError(f"{path}: cannot load ONNX model ({str(exc).splitlines()[0]})") from None
        own = read_onnx_config(path, sess)
        if own is None and meta is None:
            raise RunError(
                f"{path}: no ecgvit config embedded or beside it ({path}.json); export it with `ecgvit export RUN`"
            )
        if own is not None and meta is not None and list(own["classes"]) != list(meta["classes"]):
            raise RunError(f"{path}: classes {own['classes']} differ from the run's {meta['classes']}")
        self.meta: dict[str, Any] = meta if meta is not None else dict(own or {})
        self.path = path
        self.session = sess
        self._input = sess.get_inputs()[0].name
        self.has_features = len(sess.get_outputs()) > 1

    def infer(self, arrays: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        # NumPy, not torch: a torch operation here would wake torch's thread pool, whose threads
        # then spin on the cores the decode threads need.
        x = model_input(arrays)
        outs = [self.session.run(None, {self._input: x[i : i + ORT_CHUNK]}) for i in range(0, len(x), ORT_CHUNK)]
        logits = np.concatenate([o[0] for o in outs])
        feats = np.concatenate([o[1] for o in outs]) if features and self.has_features else None
        return logits, feats


class TorchBackend:
    """A run's PyTorch weights (eval mode), loaded on first use."""

    name = "torch"

    def __init__(self, run: str | Path | LoadedRun, threads: int = 0):
        self.threads = threads
        if isinstance(run, LoadedRun):
            self._loaded: LoadedRun | None = run
            self.run = Path(run.path)
            self.meta = run.meta
            self._set_threads()
        else:
            self._loaded = None
            self.run = Path(run)
            self.meta = Run(run).read_config()

    def _set_threads(self) -> None:
        if self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)

    @property
    def loaded(self) -> LoadedRun:
        if self._loaded is None:
            self._set_threads()
            self._loaded = load_run(self.run)
        return self._loaded

    @property
    def model(self) -> Any:
        return self.loaded.model

    def infer(self, arrays: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        from ecgvit.models import WithFeatures, prepare_batch

        x = prepare_batch(arrays)
        with torch.inference_mode():
            if features:
                logits, feats = WithFeatures(self.model)(x)
                return logits.float().numpy(), feats.float().numpy()
            return self.model(x).float().numpy(), None


def auto_backend(
    run: str | Path | LoadedRun | None, onnx: str | Path | None, backend: str = "auto", threads: int = 0
) -> tuple[Backend, TorchBackend | None]:
    """(the backend to infer with, the run's PyTorch backend when there is a run: explanations
    need it). "auto": ONNX Runtime when an .onnx file is given, or RUN/model.onnx was exported
    from the run's weights as they are now, else PyTorch; "torch" or "onnx" insist."""
    if backend not in ("auto", "torch", "onnx"):
        raise ValueError(f"backend={backend!r}: expected 'auto', 'torch' or 'onnx'")
    torch_be = TorchBackend(run, threads) if run is not None else None
    if torch_be is None and onnx is None:
        raise ValueError("no model: give a run folder or an exported .onnx file")
    if onnx is None and torch_be is not None and backend != "torch":
        r = Run(torch_be.run)
        if r.onnx_file.exists() and onnxruntime_available():
            if r.onnx_is_current():
                onnx = r.onnx_file
            elif backend == "onnx":
                raise RunError(
                    f"{r.onnx_file} was exported from other weights than {r.weights_file}: run `ecgvit export {r.path}` again"
                )
            else:
                log.warning(f"{r.onnx_file} is out of date (exported from other weights); using PyTorch")
    if backend == "onnx" and onnx is None:
        raise RunError(f"backend 'onnx' needs an exported model: run `ecgvit export {run or 'RUN'}` first")
    if onnx is not None and backend != "torch":
        return OnnxBackend(onnx, threads, meta=torch_be.meta if torch_be is not None else None), torch_be
    if torch_be is None:
        raise RunError("this needs the PyTorch weights: pass the RUN folder, not only the .onnx file")
    torch_be.loaded  # noqa: B018  (load now: a broken weights file is said before any page is read)
    return torch_be, torch_be
