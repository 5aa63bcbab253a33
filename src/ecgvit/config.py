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


# The model `ecgvit train` builds when none is named (registered in ecgvit.models).
DEFAULT_MODEL = "ecgvit-tiny"


# What a run saved before a TrainConfig setting existed was trained with: its config.json has no
# such key, and the default may move (a run's recorded settings must describe how it was trained).
TRAIN_SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {"average_last": 0.0}


def saved_train_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded TrainConfig dict, completed with the values of settings it predates."""
    return {**TRAIN_SETTINGS_BEFORE_THEY_EXISTED, **saved}


@dataclass(frozen=True)
class TrainConfig:
    model: str = DEFAULT_MODEL
    # 90: two same-fold CV runs of the ViT alone (last weights) scored 0.889 and 0.881, against 0.868
    # and 0.873 at 60 and 0.861 and 0.845 at 40 (a third: 0.892, a fourth: 0.870), in 457-499 s per fold
    # (MODEL_CARD.md), all at 192x320. The bundled model is this recipe at ecgvit-tiny's 288x320.
    epochs: int = 90
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    balance: str = "sampler"  # "sampler": class-balanced sampling; "weights": weighted loss; "none"
    augment: str = "ecg"  # "ecg": small affine, blur, contrast, noise; "none"
    val_fraction: float = 0.15  # grouped hold-out when no split file is given; 0: train on all, keep the last epoch
    patience: int = 12  # epochs without a better validation macro-F1 before stopping; 0: never stop early
    # "best": keep the epoch with the best validation macro-F1; "last": keep the last epoch. CV uses
    # "last" with patience 0, because picking an epoch on the fold being scored would flatter it.
    keep: str = "best"
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = all cores
    split: str | None = None
    fold: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    init_weights: str | None = None  # a local .safetensors file to start from (never a hub download)
    # Pretraining on synthetic pages (`ecgvit synth`) before the real ones: pages per class and
    # epochs (0 pages: off). Done once per (model, preprocessing, these settings) and cached.
    pretrain_per_class: int = 250
    pretrain_epochs: int = 20
    pretrain_seed: int = 100
    # Fit the out-of-scope gate and temperature (ecgvit.gate.calibrate) when training ends, so a
    # new run refuses what it cannot read from the start. CV folds skip it.
    gate: bool = True
    # Knowledge distillation from a trained run (e.g. a CNN baseline) with the same classes and
    # preprocessing: loss = (1 - w) * CE(labels) + w * T^2 * KL(teacher_T || student_T), the
    # teacher seeing the same augmented batch. A teacher is a trained run folder, or a
    # registered model name: that model is then trained first with this recipe on the same
    # pages (into RUN/teacher-NAME). Several, comma-separated, teach together (probabilities
    # averaged). In CV, a CV folder of the teacher (its r{repeat}_fold{k} run is used for each
    # fold). A teacher must not have trained on this run's validation pages (checked).
    # "auto": the model's own default teacher (ModelSpec.default_teacher: the CNN
    # mobilenetv4_conv_small for ecgvit-tiny, none for the CNNs), resolved when training starts
    # and recorded as resolved (with epochs=60, average_last=0: the bundled model's recipe). None ("none"): no
    # teacher, the default: distilled at 60 epochs the ViT averaged 0.883 macro-F1 over three CV
    # runs, alone at 90 it averaged 0.887, in ~8 min per fold against ~12 with the teacher and
    # without the teacher's 2.06 GiB peak (MODEL_CARD.md).
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    # Epochs of a teacher given by model name (trained first); None: two thirds of `epochs`
    # (rounded), as measured: the CNN trains for 40 while the ViT trains for 60 (MODEL_CARD.md).
    teacher_epochs: int | None = None
    # "online": the teacher scores every augmented batch the student sees (~2 s a ViT epoch
    # here); "cached": it scores each clean training page once before the first epoch (~1 s),
    # and those tempered probabilities are the targets every epoch. Cached is faster but scored
    # lower on all five CV folds (0.871 against 0.902 macro-F1, same teachers; MODEL_CARD.md).
    distill_targets: str = "online"
    # Stochastic weight averaging (Izmailov et al. 2018): the model kept and scored is the plain
    # average of the weights after every optimiser step of the last `average_last` fraction of
    # training (0: off, the last step's weights). Off by default: on the very trajectories of the
    # three 90-epoch CV runs (same folds), averaging the last half scored 0.908, 0.884 and 0.887
    # macro-F1 over folds against 0.889, 0.881 and 0.892 for the last weights: +0.006 on average,
    # one run of three lower, within the run-to-run spread (MODEL_CARD.md).
    average_last: float = 0.0

    def __post_init__(self) -> None:
        if self.balance not in ("sampler", "weights", "none"):
            raise ValueError(f"balance={self.balance!r}: expected 'sampler', 'weights' or 'none'")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep={self.keep!r}: expected 'best' or 'last'")
        if self.augment not in ("ecg", "none"):
            raise ValueError(f"augment={self.augment!r}: expected 'ecg' or 'none'")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size}: both must be >= 1")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction={self.val_fraction}: expected 0 <= f < 0.5 (0: no validation part)")
        if not 0.0 <= self.distill_weight <= 1.0 or self.distill_temperature <= 0:
            raise ValueError(
                f"distill_weight={self.distill_weight}, distill_temperature={self.distill_temperature}: need 0 <= weight <= 1 and temperature > 0"
            )
        if self.distill_targets not in ("online", "cached"):
            raise ValueError(f"distill_targets={self.distill_targets!r}: expected 'online' or 'cached'")
        if not 0.0 <= self.average_last < 1.0:
            raise ValueError(f"average_last={self.average_last}: expected 0 <= fraction < 1 (0: no weight averaging)")
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
            raise ValueError(f"teacher_epochs={self.teacher_epochs}: must be >= 1 (or None: two thirds of epochs)")
        if (self.split is None) != (self.fold is None):
            raise ValueError("--split and --fold go together: name the split file and the fold to validate on")


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
        raise ValueError(
            f"unknown {cls.__name__} field(s): "
            + ", ".join(f"{k!r} (did you mean {h}?)" if h else repr(k) for k, h in hints.items())
        )
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
