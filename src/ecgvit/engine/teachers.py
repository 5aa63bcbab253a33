"""Knowledge-distillation teachers: naming, resolving and loading them (training them is
`ecgvit.engine.train.train_teacher`, which runs the training loop)."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ecgvit.config import PreprocessConfig, TrainConfig, to_dict
from ecgvit.models import get_spec, list_models
from ecgvit.run import PAGES_CSV, is_run_dir, load_run

__all__ = ["check_teacher", "fold_teacher", "load_teacher", "resolve_teacher", "teacher_epochs"]


def resolve_teacher(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with teacher "auto" replaced by its model's default teacher, and "none" by None."""
    if cfg.teacher == "auto":
        return replace(cfg, teacher=get_spec(cfg.model).default_teacher)
    if cfg.teacher is not None and cfg.teacher.strip().lower() in ("", "none"):
        return replace(cfg, teacher=None)
    return cfg


def teacher_epochs(cfg: TrainConfig) -> int:
    """Epochs of a teacher trained by name: `teacher_epochs`, else two thirds of `epochs`."""
    return cfg.teacher_epochs or max(1, round(cfg.epochs * 2 / 3))


def check_teacher(teacher: str) -> str:
    """ "run" for a trained run folder, "model" for a registered model name; else a clear error."""
    if is_run_dir(teacher):
        return "run"
    if teacher in list_models():
        return "model"
    close = difflib.get_close_matches(teacher, list_models(), n=3)
    hint = (
        f" (did you mean {', '.join(close)}?)"
        if close
        else " (give a trained run folder or a registered model name: `ecgvit models`)"
    )
    raise ValueError(f"teacher {teacher!r}: neither a trained run folder nor a model name{hint}")


def fold_teacher(teacher: str, fold_run: str) -> str:
    """A CV fold's teacher: a teacher's CV folder stands for its run on the same repeat and fold
    (`fold_run`, e.g. r0_fold2; train() checks it never saw this fold's pages); a run folder or
    a model name (trained inside the fold) is used as given."""
    p = Path(teacher)
    return str(p / fold_run) if p.is_dir() and not is_run_dir(p) else teacher


def load_teacher(
    path: str, classes: list[str], preprocess: PreprocessConfig, val_md5s: Sequence[str], device: torch.device
) -> nn.Module:
    """The distillation teacher from a run folder, checked to fit this run: same classes, same
    preprocessing (it sees the student's batches), and none of this run's validation pages among
    its training pages (a teacher that saw them would leak their labels into the student)."""
    lr = load_run(path)
    if lr.classes != list(classes):
        raise ValueError(f"teacher {path}: classes {lr.classes} differ from the data's {list(classes)}")
    if to_dict(lr.preprocess) != to_dict(preprocess):
        raise ValueError(
            f"teacher {path}: its preprocessing {to_dict(lr.preprocess)} differs from this run's {to_dict(preprocess)}"
        )
    pages_csv = Path(path) / PAGES_CSV
    if not pages_csv.exists():
        raise FileNotFoundError(
            f"teacher {path}: no {PAGES_CSV}, so it cannot be checked for leaks into the validation pages"
        )
    with open(pages_csv, newline="") as f:
        seen = {row["md5"] for row in csv.DictReader(f) if row["part"] == "train"}
    leaked = seen.intersection(val_md5s)
    if leaked:
        raise ValueError(
            f"teacher {path} trained on {len(leaked)} of this run's validation pages: distilling it would leak their labels"
        )
    for p in lr.model.parameters():
        p.requires_grad_(False)
    return lr.model.to(device).eval()
