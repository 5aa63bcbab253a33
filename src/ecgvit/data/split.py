"""`ecgvit data split`: grouped, stratified K-fold splits of a manifest (plus an optional test part).

Unit of splitting: the duplicate group (manifest `group`; a file without a group is its own
group). Every file of a group lands in the same fold, so no page, exact copy or near duplicate is
ever on two sides. Stratification is by group (one vote per distinct group, labelled by its
majority label), so each fold holds about the same number of distinct pages of each class,
whatever the number of copies per page.

1. Test part (test_fraction > 0): per class, round(test_fraction * groups) groups (at least one)
   drawn at random from the seed are held out as fold "test".
2. The remaining groups go to K folds with scikit-learn's StratifiedGroupKFold(shuffle=True,
   random_state=seed).

Bad rows (status "bad") are excluded from the split file (a note on stderr and the count in
splits.json say so). Every class must keep at least K groups for the K folds (so each fold
validates on every class); otherwise make_splits raises ValueError naming the class.
Same manifest + same config -> same split.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgvit.config import KHAN_CLASSES, SplitConfig, save_json, to_dict
from ecgvit.data.manifest import ManifestRow, portable_path, read_csv_rows, read_manifest, resolve_path

log = logging.getLogger("ecgvit")

TEST = "test"
SPLIT_COLUMNS: tuple[str, ...] = ("path", "label", "group", "fold")


@dataclass
class SplitRow:
    """One file's side: fold "0".."K-1" (cross-validation) or "test" (held out)."""

    path: str  # absolute
    label: str
    group: str
    fold: str

    @property
    def is_test(self) -> bool:
        return self.fold == TEST

    @property
    def fold_index(self) -> int | None:
        """The fold as an int, None for the test part."""
        return None if self.is_test else int(self.fold)


def train_val(rows: list[SplitRow], fold: int) -> tuple[list[SplitRow], list[SplitRow]]:
    """(training rows, validation rows) for cross-validation fold `fold`; test rows in neither."""
    key = str(fold)
    if not any(r.fold == key for r in rows):
        raise ValueError(f"fold {fold}: no such fold (folds: {', '.join(sorted({r.fold for r in rows}))})")
    return [r for r in rows if not r.is_test and r.fold != key], [r for r in rows if r.fold == key]


def validate_config(cfg: SplitConfig) -> None:
    if not isinstance(cfg.folds, int) or cfg.folds < 2:
        raise ValueError(f"folds={cfg.folds}: need at least 2 folds")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction={cfg.test_fraction}: need 0 <= test_fraction < 1")


def _class_order(labels: set[str]) -> list[str]:
    known = [c for c in KHAN_CLASSES if c in labels]
    return known + sorted(labels - set(known))


def make_splits(
    manifest: str | os.PathLike[str] | list[ManifestRow],
    cfg: SplitConfig = SplitConfig(),
    out: str | os.PathLike[str] | None = None,
) -> list[SplitRow]:
    """Assign every ok manifest row to a fold ("0".."K-1") or "test", by group.

    `manifest`: a manifest CSV path (read with read_manifest) or rows. With `out`, writes the
    split CSV (path,label,group,fold) and the config next to it (splits.csv -> splits.json).
    Rows come back in manifest order. Raises ValueError on a bad config or a class with fewer
    groups than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    validate_config(cfg)
    source = None
    if isinstance(manifest, (str, os.PathLike)):
        source = os.path.abspath(manifest)
        rows = read_manifest(manifest)
    else:
        rows = list(manifest)
    ok = [r for r in rows if r.ok]
    n_bad = len(rows) - len(ok)
    if n_bad:
        log.warning(f"note: {n_bad} bad row(s) (status 'bad') excluded from the split")
    if not ok:
        raise ValueError("no usable rows in the manifest (all bad or empty)")
    if not any(r.md5 or r.group for r in ok):
        log.warning(
            "note: the manifest has no md5 or group column: each file is its own group, duplicates are NOT grouped "
            "(run `ecgvit data index` on it first)"
        )

    # one label per group: the majority (ties: first in class order)
    labels_of: dict[str, Counter[str]] = defaultdict(Counter)
    for r in ok:
        labels_of[r.group_key][r.label] += 1
    classes = _class_order({r.label for r in ok})
    rank = {c: i for i, c in enumerate(classes)}
    groups = sorted(labels_of)
    glabel = {g: min(labels_of[g].items(), key=lambda kv: (-kv[1], rank[kv[0]]))[0] for g in groups}
    mixed = sum(len(c) > 1 for c in labels_of.values())
    if mixed:
        log.warning(f"note: {mixed} group(s) hold more than one label; stratified by their majority label")
        minority_only = [c for c in classes if c not in set(glabel.values())]
        if minority_only:
            log.warning(f"note: label(s) {', '.join(minority_only)} are never a group's majority: not stratified")
        classes = [c for c in classes if c in set(glabel.values())]

    per_class: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        per_class[glabel[g]].append(g)

    # 1. test part, per class
    fold_of: dict[str, str] = {}
    if cfg.test_fraction > 0:
        rng = np.random.default_rng(cfg.seed)
        for c in classes:
            gs = per_class[c]
            n_test = max(1, int(round(cfg.test_fraction * len(gs))))
            if len(gs) - n_test < cfg.folds:
                raise ValueError(
                    f"class {c!r}: {len(gs)} group(s); holding out {n_test} for test leaves {len(gs) - n_test} "
                    f"for {cfg.folds} folds (need at least {cfg.folds}); lower --test-fraction or --folds"
                )
            for k in rng.permutation(len(gs))[:n_test]:
                fold_of[gs[int(k)]] = TEST

    # 2. K folds on the rest
    rest = [g for g in groups if g not in fold_of]
    counts = Counter(glabel[g] for g in rest)
    short = [(c, counts[c]) for c in classes if counts[c] < cfg.folds]
    if short:
        raise ValueError(
            "too few groups for "
            + f"{cfg.folds} folds: "
            + ", ".join(f"class {c!r} has {n} distinct group(s)" for c, n in short)
            + f" (each fold must validate on every class: use --folds {max(2, min(n for _, n in short))} or fewer, if >= 2)"
        )
    y = np.array([rank[glabel[g]] for g in rest])
    sgkf = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    # One sample per group: stratifies distinct pages, not copies.
    for k, (_, val) in enumerate(sgkf.split(np.zeros((len(rest), 1)), y, groups=np.arange(len(rest)))):
        for i in val:
            fold_of[rest[int(i)]] = str(k)

    result = [SplitRow(path=r.path, label=r.label, group=r.group, fold=fold_of[r.group_key]) for r in ok]
    if out is not None:
        write_splits(result, out)
        save_json(
            Path(out).with_suffix(".json"),
            {
                "kind": "ecgvit-splits",
                "manifest": source,
                "config": to_dict(cfg),
                "rows": len(result),
                "excluded_bad": n_bad,
                "groups": len(groups),
                "groups_per_fold_and_class": split_counts(result),
            },
        )
    return result


def write_splits(rows: list[SplitRow], path: str | os.PathLike[str]) -> None:
    """Write split rows as CSV atomically; paths relative to the CSV's folder where possible."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(SPLIT_COLUMNS)
        for r in rows:
            w.writerow([portable_path(r.path, base), r.label, r.group, r.fold])
    tmp.replace(path)


def read_splits(path: str | os.PathLike[str]) -> list[SplitRow]:
    """Rows of a split CSV (path,label,group,fold), paths absolute."""
    path = Path(path)
    header, records = read_csv_rows(path)
    if "fold" not in header:
        raise ValueError(f"{path}: missing column fold; found {', '.join(header)}")
    base = path.parent.resolve()
    rows = []
    for line, rec in records:
        fold = (rec.get("fold") or "").strip().lower()
        if fold != TEST and not fold.isdigit():
            raise ValueError(f"{path}:{line}: fold={fold!r}, expected 0..K-1 or 'test'")
        rows.append(
            SplitRow(
                path=resolve_path(rec["path"], base),
                label=rec["label"].strip(),
                group=(rec.get("group") or "").strip(),
                fold=fold,
            )
        )
    return rows


def _fold_order(folds: set[str]) -> list[str]:
    return sorted((f for f in folds if f != TEST), key=int) + ([TEST] if TEST in folds else [])


def split_counts(rows: list[SplitRow]) -> dict[str, dict[str, int]]:
    """{fold: {class: distinct groups}}."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        seen[r.fold][r.label].add(r.group or r.path)
    classes = _class_order({r.label for r in rows})
    return {f: {c: len(seen[f][c]) for c in classes} for f in _fold_order(set(seen))}


def split_summary_text(rows: list[SplitRow]) -> str:
    """Table of distinct groups per fold x class, with group and file totals per fold."""
    counts = split_counts(rows)
    classes = _class_order({r.label for r in rows})
    files = Counter(r.fold for r in rows)
    groups: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        groups[r.fold].add(r.group or r.path)
    widths = [max(len(c), 4) for c in classes]
    head = (
        f"{'fold':<5}  "
        + "  ".join(f"{c:>{w}}" for c, w in zip(classes, widths, strict=False))
        + f"  {'groups':>6}  {'files':>6}"
    )
    lines = ["distinct groups per fold and class:", head]
    for f, per in counts.items():
        lines.append(
            f"{f:<5}  "
            + "  ".join(f"{per[c]:>{w}}" for c, w in zip(classes, widths, strict=False))
            + f"  {len(groups[f]):>6}  {files[f]:>6}"
        )
    total_groups = len({r.group or r.path for r in rows})
    lines.append(
        f"{len(rows)} files, {total_groups} groups, {len([f for f in counts if f != TEST])} folds"
        + (", test held out" if TEST in counts else "")
    )
    return "\n".join(lines)
