"""The run folder: every file a training run holds, how each is read and written, and the
model shipped inside the package.

    RUN/
      config.json          classes, preprocessing, model and training config (the run's meta)
      model.safetensors    the weights
      gate.json            the out-of-scope gate's thresholds (+ gate.safetensors: feature statistics)
      model.onnx           the exported model (+ model.onnx.json: its config, with the weights' sha256)
      pages.csv            the pages it trained and validated on
      metrics.csv          one row per epoch
      resume.pt            the resume checkpoint

Everything that needs a file name of a run asks this module, so the names live in one place.
Reading a run needs no torch; `Run.load_model` imports it only when PyTorch weights are wanted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ecgvit.config import PreprocessConfig, from_dict, save_json

__all__ = [
    "BUNDLED_NAME",
    "CONFIG_JSON",
    "GATE_JSON",
    "GATE_TENSORS",
    "METRICS_CSV",
    "ONNX_FILE",
    "ONNX_META_KEY",
    "PAGES_CSV",
    "RESUME_FILE",
    "WEIGHTS_FILE",
    "LoadedRun",
    "Run",
    "RunError",
    "bundled_dir",
    "bundled_names",
    "bundled_run",
    "bundled_version",
    "exclusive",
    "is_run_dir",
    "publish",
    "load_run",
    "read_json",
    "read_onnx_config",
    "weights_digest",
]

CONFIG_JSON = "config.json"
WEIGHTS_FILE = "model.safetensors"
GATE_JSON = "gate.json"
GATE_TENSORS = "gate.safetensors"
ONNX_FILE = "model.onnx"
PAGES_CSV = "pages.csv"
METRICS_CSV = "metrics.csv"
RESUME_FILE = "resume.pt"
LOCK_FILE = ".ecgvit.lock"  # held while a run trains into the folder
# The metadata key under which an exported ONNX model carries its run's config.
ONNX_META_KEY = "ecgvit_config"
# The default bundled model; every folder under weights/ is a bundled model too (by its name).
BUNDLED_NAME = "ecgvit-tiny-leads-khan"


class RunError(ValueError):
    """A run folder or one of its files is missing or unreadable (the message names the file)."""


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from `path`; a missing or malformed file is a RunError naming it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


@contextmanager
def exclusive(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold an advisory lock on `lock_file` while the block runs; another process already
    holding it is refused at once with a one-line error naming `what` (never waited for)."""
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunError(
            f"{what} is in use by another ecgvit run (locked: {lock_file}); wait for it or choose another"
        ) from None
    try:
        yield
    finally:
        # Removed while still held, then released: a run that starts meanwhile is refused (it
        # never waits), so no two runs hold it.
        Path(lock_file).unlink(missing_ok=True)
        lock.release()


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temp file into place with the permissions of any other file the user
    writes (safetensors creates its files 0600; the rest of a run folder is 0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


def is_run_dir(p: str | Path) -> bool:
    p = Path(p)
    return p.is_dir() and (p / CONFIG_JSON).is_file()


def weights_digest(path: str | Path) -> str:
    """sha256 of a weights file: ties an exported ONNX model to the weights it came from."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Run:
    """A run folder and the names of its files."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_JSON

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def onnx_file(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def gate_file(self) -> Path:
        return self.path / GATE_JSON

    @property
    def gate_tensors_file(self) -> Path:
        return self.path / GATE_TENSORS

    @property
    def pages_file(self) -> Path:
        return self.path / PAGES_CSV

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def resume_file(self) -> Path:
        return self.path / RESUME_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    def exists(self) -> bool:
        return is_run_dir(self.path)

    def check(self) -> Run:
        """This run, or a RunError saying what is missing."""
        if not self.path.exists():
            raise RunError(f"{self.path}: no such run folder")
        if not self.config_file.is_file():
            raise RunError(f"{self.path}: not a training run (no {CONFIG_JSON})")
        return self

    def read_config(self) -> dict[str, Any]:
        return read_json(self.check().config_file)

    def write_config(self, meta: dict[str, Any]) -> None:
        save_json(self.config_file, meta)

    def onnx_is_current(self, onnx_path: str | Path | None = None) -> bool:
        """True when the exported model (default RUN/model.onnx) came from RUN/model.safetensors as it is now."""
        onnx_path = Path(onnx_path) if onnx_path is not None else self.onnx_file
        meta = read_onnx_config(onnx_path)
        want = (meta or {}).get("export", {}).get("weights_sha256")
        return bool(want) and self.weights_file.exists() and weights_digest(self.weights_file) == want

    def load_model(self) -> LoadedRun:
        return load_run(self.path)


def read_onnx_config(path: str | Path, sess: Any = None) -> dict[str, Any] | None:
    """The ecgvit config of an exported model: embedded in the ONNX Runtime session's metadata
    (`sess`), else the sidecar PATH.json, else embedded in the file (read with `onnx`, when
    installed), else None."""
    path = Path(path)
    if sess is not None:
        raw = sess.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        if raw:
            return dict(json.loads(raw))
    side = Path(str(path) + ".json")
    if side.exists():
        return read_json(side)
    if sess is None and path.exists():
        try:
            import onnx
        except ImportError:
            return None
        try:
            m = onnx.load(str(path), load_external_data=False)
        except Exception:  # a broken file: the caller that opens it says why
            return None
        raw = {p.key: p.value for p in m.metadata_props}.get(ONNX_META_KEY)
        return dict(json.loads(raw)) if raw else None
    return None


@dataclass
class LoadedRun:
    """A run's PyTorch model (eval mode) with its meta."""

    model: Any  # torch.nn.Module (typed loosely: this module never imports torch at import time)
    meta: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return from_dict(PreprocessConfig, self.meta["preprocess"])


def load_run(run: str | Path) -> LoadedRun:
    """A trained model from RUN/ (config.json + model.safetensors), in eval mode."""
    from ecgvit.models import create_model, get_spec, load_weights

    r = Run(run)
    meta = r.read_config()
    try:
        m = meta["model"]
        model = create_model(
            m["name"],
            num_classes=len(meta["classes"]),
            img_size=tuple(m["img_size"]),
            in_chans=m["in_chans"],
            **m.get("kwargs", {}),
        )
    except (KeyError, TypeError) as exc:
        raise RunError(f"{r.config_file}: not an ecgvit run config (missing or bad {exc})") from None
    try:
        load_weights(model, r.weights_file)
    except FileNotFoundError:
        raise RunError(f"{r.weights_file}: no such file (the run has no weights)") from None
    except ValueError:
        raise  # weights that do not fit the model: load_weights names the file already
    except Exception as exc:  # safetensors' own errors for a truncated or foreign file
        raise RunError(f"{r.weights_file}: not a readable weights file ({str(exc).splitlines()[0][:200]})") from None
    if get_spec(m["name"]).channels_last:  # as it trained: the faster layout for its convolutions
        import torch

        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(model, meta, r.path)


# --- the model shipped inside the package ----------------------------------------------------
# Made by scripts/train_bundled.py from the Khan & Hussain pages (see MODEL_CARD.md), so that
# `ecgvit predict page.jpg` answers without training.


def bundled_dir(name: str | None = None) -> Path:
    """Where the bundled model `name` (default: the default one, BUNDLED_NAME) lives."""
    return Path(__file__).resolve().parent / "weights" / (name or BUNDLED_NAME)


def bundled_run(name: str | None = None) -> Path | None:
    """The bundled run folder (config.json + model.safetensors) of `name` (default: the default
    model), or None if this install has no such model."""
    d = bundled_dir(name)
    return d if (d / CONFIG_JSON).exists() and (d / WEIGHTS_FILE).exists() else None


def bundled_names() -> list[str]:
    """The names of the models bundled in this install, the default first."""
    root = bundled_dir().parent
    found = sorted(p.name for p in root.iterdir() if bundled_run(p.name)) if root.is_dir() else []
    return sorted(found, key=lambda n: n != BUNDLED_NAME)


def bundled_version() -> str | None:
    d = bundled_run()
    if d is None:
        return None
    meta = read_json(d / CONFIG_JSON)
    return f"{BUNDLED_NAME} (ecgvit {meta.get('ecgvit_version', '?')}, seed {meta.get('bundled', {}).get('seed', '?')})"
