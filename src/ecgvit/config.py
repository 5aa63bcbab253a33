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
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

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


PREPROCESS_FORMS = ("page", "signals", "traces")


@dataclass(frozen=True)
class PreprocessConfig:
    """From a page file to a model-ready array.

    form: "page": the page's grid area as an image (crop, grey, resize: the Khan-template model);
          "signals" / "traces": the page reader's twelve leads redrawn in one canonical layout,
          whatever the page's layout and style (`ecgvit.reader.canonical`; `crop` is unused).
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
    form: str = "page"

    def __post_init__(self) -> None:
        if self.form not in PREPROCESS_FORMS:
            raise ValueError(f"form={self.form!r}: expected one of {', '.join(map(repr, PREPROCESS_FORMS))}")
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

    @property
    def reads_leads(self) -> bool:
        """The model reads the page reader's leads (not the page's pixels)."""
        return self.form != "page"

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


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its command-line help (`ecgvit train`/`cv` build their flags from these)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """How `ecgvit train` trains (and `ecgvit cv` trains each fold). Measured comparisons of these
    settings are in docs/experiments.md; what is here says what each does."""

    model: str = _opt(DEFAULT_MODEL, "model name (see `ecgvit models`)")
    # The default epochs were chosen by grouped CV on the Khan pages, never on a test split.
    epochs: int = _opt(90, "training epochs (CV: fixed epochs per fold, the last one scored)")
    batch_size: int = _opt(32, "pages per optimiser step")
    lr: float = _opt(1e-3, "peak AdamW learning rate (linear warm-up, cosine decay)")
    weight_decay: float = _opt(0.05, "AdamW weight decay (not on norms, biases, tokens, positions)")
    warmup_epochs: int = _opt(3, "epochs of linear learning-rate warm-up")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy")
    balance: str = _opt(
        "sampler",
        "class balance: sampler (balanced sampling), weights (weighted loss) or none",
        choices=("sampler", "weights", "none"),
    )
    # No flips in "ecg": a flipped lead is another diagnosis.
    augment: str = _opt(
        "ecg", "augmentation: ecg (small affine, blur, contrast, noise) or none", choices=("ecg", "none")
    )
    val_fraction: float = _opt(
        0.15, "grouped hold-out for validation when no --split is given (0: train on all, keep the last epoch)"
    )
    patience: int = _opt(12, "epochs without a better validation macro-F1 before stopping (0: never stop early)")
    # CV uses "last" with patience 0: picking an epoch on the fold being scored would flatter it.
    keep: str = _opt("best", "which epoch to keep: best (validation macro-F1) or last", choices=("best", "last"))
    seed: int = _opt(0, "training seed")
    threads: int = _opt(0, "torch intra-op threads (0: all cores)")
    split: str | None = _opt(None, "splits.csv from `ecgvit data split`; validate on --fold")
    fold: int | None = _opt(None, "the fold of --split to validate on")
    model_kwargs: dict[str, Any] = _opt({}, "extra keyword arguments of the model's constructor", cli=False)
    # Local files only: weights never come from a hub.
    init_weights: str | None = _opt(None, "initial weights: a local .safetensors file", flag="--weights")
    # Synthetic pretraining (`ecgvit synth` pages) before the real ones: a few hundred real pages
    # are too few for a transformer to find ST segments and Q waves. Done once per (model,
    # preprocessing, these settings) and cached.
    pretrain_per_class: int = _opt(250, "synthetic pages per class to pretrain on first (0: off; cached)")
    pretrain_epochs: int = _opt(20, "epochs of synthetic pretraining")
    pretrain_seed: int = _opt(100, "seed of the synthetic pretraining pages and run")
    # Real morphology the generator's textbook beats lack: recorded ECGs (the ptbxl_z layout, train
    # split, normal and MI records) drawn as pages in random styles, added to the pretraining.
    pretrain_records: str | None = _opt(
        None,
        "folder of real 12-lead records (ptbxl_z layout: labels.csv + records/) drawn as pages and added to the pretraining",
    )
    # Fitted when training ends, so a new run refuses what it cannot read from the start. CV folds skip it.
    gate: bool = _opt(True, "fit the out-of-scope gate when training ends (else later: `ecgvit calibrate RUN`)")
    # Distillation: loss = (1 - w) * CE(labels) + w * T^2 * KL(teacher_T || student_T), the teacher
    # seeing the same augmented batch. A teacher must not have trained on this run's validation
    # pages (checked); in CV, a teacher's CV folder gives each fold its own fold's run.
    teacher: str | None = _opt(
        None,
        "distil from this trained run or model name (a model name is trained first), or several comma-separated; "
        "auto: the model's own default teacher (`ecgvit models`); in CV, the teacher's CV folder; default: none",
    )
    distill_weight: float = _opt(0.5, "weight of the distillation loss")
    distill_temperature: float = _opt(2.0, "softmax temperature of the distillation loss")
    teacher_epochs: int | None = _opt(None, "epochs of a teacher named by model (default: two thirds of --epochs)")
    # "cached" is faster (each clean page scored once) but gives the student fixed targets.
    distill_targets: str = _opt(
        "online",
        "online: the teacher scores every augmented batch; cached: each clean page once, before training",
        choices=("online", "cached"),
    )
    # A model on the reader's leads sees each real page redrawn by other carts (ecgvit.engine.restyle):
    # its own signals, its label, another style and layout.
    restyle: float = _opt(
        0.0,
        "share of training pages shown redrawn in another generator style and layout (models on the reader's leads; 0: off)",
    )
    restyle_copies: int = _opt(3, "restyled drawings of each training page (made once, cached)")
    # Real morphology kept through fine-tuning: pretraining alone on recorded ECGs is forgotten over
    # 60 epochs of one cart's pages. The records (train split) are drawn once in random styles and
    # layouts, read as at prediction time, and stand in for this share of every batch.
    cotrain_records: str | None = _opt(
        None,
        "folder of real 12-lead records (ptbxl_z layout) drawn as pages and mixed into every training batch",
    )
    cotrain_share: float = _opt(0.25, "share of each training batch taken from --cotrain-records' pages")
    # Stochastic weight averaging (Izmailov et al. 2018).
    average_last: float = _opt(
        0.0, "keep the plain average of the weights over this last fraction of training steps (0: the last weights)"
    )

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
        if not 0.0 <= self.cotrain_share < 1.0:
            raise ValueError(f"cotrain_share={self.cotrain_share}: expected 0 <= share < 1")
        if not 0.0 <= self.restyle <= 1.0 or self.restyle_copies < 1:
            raise ValueError(
                f"restyle={self.restyle}, restyle_copies={self.restyle_copies}: need 0 <= share <= 1 and copies >= 1"
            )
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

    names = {f.name: f for f in dataclasses.fields(cls)}
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
    return cls(**kwargs)


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
