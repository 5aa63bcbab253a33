"""Distinct labelled pages, the unit every training, evaluation and split works on.

A data folder (indexed, duplicates grouped) or a manifest becomes a `PageSet` with one page per
duplicate group, so a page and its copies can never sit on both sides of a split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgvit.config import KHAN_CLASSES
from ecgvit.data.index import index_dataset
from ecgvit.data.manifest import read_manifest
from ecgvit.data.preprocess import file_md5

__all__ = ["PageSet", "holdout_split", "load_pageset", "split_from_file"]


@dataclass
class PageSet:
    """Distinct pages with labels, groups and the preprocessed arrays (filled later)."""

    paths: list[str]
    md5s: list[str]
    labels: np.ndarray  # int class index
    groups: list[str]
    classes: list[str]

    def subset(self, idx: np.ndarray) -> PageSet:
        return PageSet(
            [self.paths[i] for i in idx],
            [self.md5s[i] for i in idx],
            self.labels[idx],
            [self.groups[i] for i in idx],
            self.classes,
        )


def load_pageset(
    data: str | Path, run_dir: Path | None = None, progress: bool = True, index_cfg: Any = None
) -> PageSet:
    """Index a folder (manifest saved into run_dir) or read a manifest; keep one file per group."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data folder or manifest")
    if data.is_dir():
        kw = {"cfg": index_cfg} if index_cfg is not None else {}
        rows = index_dataset(data, out=(run_dir / "manifest.csv") if run_dir else None, progress=progress, **kw)
    else:
        rows = read_manifest(data)
    rows = [r for r in rows if r.ok]
    seen: set[str] = set()
    keep = []
    for r in sorted(rows, key=lambda r: (r.label, r.path)):
        md5 = r.md5 or file_md5(r.path)
        key = r.group or md5
        if key in seen:
            continue  # a duplicate adds no information and would only re-weight its page
        seen.add(key)
        keep.append((r.path, md5, r.label, key))
    if not keep:
        raise ValueError(f"{data}: no usable pages")
    labels_present = sorted({k[2] for k in keep})
    # Khan classes keep their canonical order; other label sets are sorted.
    classes = (
        [c for c in KHAN_CLASSES if c in labels_present] if set(labels_present) <= set(KHAN_CLASSES) else labels_present
    )
    index = {c: i for i, c in enumerate(classes)}
    return PageSet(
        [k[0] for k in keep], [k[1] for k in keep], np.array([index[k[2]] for k in keep]), [k[3] for k in keep], classes
    )


def holdout_split(pages: PageSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grouped, stratified hold-out: about `fraction` of each class's groups go to validation."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / fraction))
    min_class = np.bincount(pages.labels).min()
    if min_class < n_splits:
        raise ValueError(
            f"a class has only {min_class} distinct pages: too few for a {fraction:.0%} grouped validation part"
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(sgkf.split(np.zeros(len(pages.labels)), pages.labels, pages.groups))
    return np.sort(train_idx), np.sort(val_idx)


def split_from_file(pages: PageSet, split_path: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Train on every fold but `fold` (and never on 'test'); validate on `fold`."""
    from ecgvit.data.split import read_splits

    fold_of = {}
    for r in read_splits(split_path):
        fold_of[os.path.abspath(r.path)] = str(r.fold)
    folds = sorted({f for f in fold_of.values() if f != "test"})
    if str(fold) not in folds:
        raise ValueError(f"fold {fold} not in {split_path} (folds: {', '.join(folds)})")
    f_of_page = [fold_of.get(os.path.abspath(p)) for p in pages.paths]
    missing = sum(f is None for f in f_of_page)
    if missing:
        raise ValueError(f"{missing} pages of the data are not in {split_path}: was it made from this data?")
    idx = np.arange(len(pages.paths))
    val = idx[[f == str(fold) for f in f_of_page]]
    train = idx[[f not in (str(fold), "test") for f in f_of_page]]
    return train, val
