"""Typed configuration dataclasses, one per stage.

Every artefact (manifest, split file, cache entry, synthetic page set, checkpoint) is written with
the config that made it, so any output can be traced back to how it was produced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# ONNX opset of `ecgvit export`. Opset 20 has GELU as one operator, which ONNX Runtime runs as
# one kernel; at opset 18 the exporter spells it out (Div, Erf, Add, Mul, Mul) and ORT leaves it
# unfused: ecgvit-tiny took 4.8-5.2 instead of 5.5-6.4 ms per page on one thread, same logits.
DEFAULT_OPSET = 20

# Canonical class names of the Khan & Hussain layout, in the order models use.
KHAN_CLASSES: tuple[str, ...] = (
    "normal",
    "myocardial_infarction",
    "abnormal_heartbeat",
    "history_of_mi",
)


@dataclass(frozen=True)
class IndexConfig:
    """How `ecgvit data index` scans a folder and groups duplicates."""

    # Hamming distance (bits of a hash_size**2-bit pHash of the trace area) at or below which two
    # distinct files are called near duplicates; 0 disables near-duplicate grouping.
    # Distinct Khan pages are >= 18 bits apart at hash_size 16, so 8 leaves a wide margin.
    near_dup_bits: int = 8
    hash_size: int = 16
    # Decompression-bomb guard: refuse images with more pixels than this.
    max_pixels: int = 100_000_000
    # Pages smaller than this on their shorter side cannot hold a readable 12-lead trace.
    min_side: int = 256


@dataclass(frozen=True)
class SplitConfig:
    """How `ecgvit data split` assigns groups to folds."""

    folds: int = 5
    seed: int = 0
    test_fraction: float = 0.0


@dataclass(frozen=True)
class PreprocessConfig:
    """From a page file to a model-ready array.

    crop: "auto" finds the printed grid (falls back to `fallback_box` and says so),
          "box" always uses `fallback_box`, "none" keeps the whole page.
    fallback_box: (left, top, right, bottom) as fractions of the page; the default is the grid
          box of the Khan template (measured on its pages).
    """

    height: int = 182
    width: int = 256
    grayscale: bool = True
    crop: str = "auto"
    fallback_box: tuple[float, float, float, float] = (0.031, 0.181, 0.982, 0.965)
    # Decode JPEGs at a reduced DCT scale when the target is this many times smaller or more.
    draft: bool = True

    def __post_init__(self) -> None:
        if self.crop not in ("auto", "box", "none"):
            raise ValueError(f"crop={self.crop!r}: expected one of 'auto', 'box', 'none'")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"size {self.height}x{self.width}: both sides must be >= 8 pixels")
        left, top, right, bottom = self.fallback_box
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"fallback_box={self.fallback_box!r}: need 0 <= left < right <= 1, 0 <= top < bottom <= 1")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def key(self) -> str:
        """Short stable hash of this config, part of every cache key."""
        return config_hash(self)


def to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build a config from a dict, refusing unknown keys with the closest valid names."""
    import difflib

    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in d if k not in names]
    if unknown:
        hints = {k: difflib.get_close_matches(k, list(names), n=3) for k in unknown}
        raise ValueError(f"unknown {cls.__name__} field(s): " + ", ".join(f"{k!r} (did you mean {h}?)" if h else repr(k) for k, h in hints.items()))
    kwargs = {}
    for k, v in d.items():
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)  # type: ignore[call-arg]


def config_hash(cfg: Any) -> str:
    blob = json.dumps({"type": type(cfg).__name__, **to_dict(cfg)}, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def save_json(path: str | Path, obj: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename) so a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
