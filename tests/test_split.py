"""`ecgvit data split`: grouped, stratified, reproducible folds with an optional test part."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict

import pytest

from ecgvit.cli import main
from ecgvit.config import SplitConfig
from ecgvit.data.index import index_dataset
from ecgvit.data.manifest import ManifestRow, write_manifest
from ecgvit.data.split import TEST, SplitRow, make_splits, read_splits, split_counts, split_summary_text, train_val

GROUPS_PER_CLASS = {"normal": 12, "myocardial_infarction": 6, "abnormal_heartbeat": 20, "history_of_mi": 9}


def synthetic_rows() -> list[ManifestRow]:
    """Manifest rows (no files needed): groups of 1-4 copies per class, plus two bad files."""
    rows = []
    g = 0
    for label, n in GROUPS_PER_CLASS.items():
        for k in range(n):
            g += 1
            for c in range(1 + (g * 7) % 4):  # 1..4 copies of the page
                rows.append(
                    ManifestRow(
                        path=f"/d/{label}/p{k}_{c}.jpg",
                        label=label,
                        md5=f"{g:032x}",
                        width=600,
                        height=428,
                        group=f"g{g:04d}",
                    )
                )
    rows.append(ManifestRow(path="/d/normal/empty.jpg", label="normal", status="bad", reason="empty file (0 bytes)"))
    rows.append(
        ManifestRow(
            path="/d/history_of_mi/text.jpg", label="history_of_mi", md5="f" * 32, status="bad", reason="not an image"
        )
    )
    return rows


def fold_of_groups(rows: list[SplitRow]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        sides[r.group].add(r.fold)
    return sides


def test_groups_never_on_two_sides_and_stratified(caplog):
    rows = synthetic_rows()
    split = make_splits(rows, SplitConfig(folds=5, seed=0))
    assert "2 bad row(s)" in caplog.text
    ok = [r for r in rows if r.ok]
    assert [s.path for s in split] == [r.path for r in ok]  # every usable file, manifest order, bad ones out
    sides = fold_of_groups(split)
    assert all(len(f) == 1 for f in sides.values())  # every group in exactly one fold
    assert len(sides) == sum(GROUPS_PER_CLASS.values())
    counts = split_counts(split)
    assert list(counts) == ["0", "1", "2", "3", "4"]
    for label, n in GROUPS_PER_CLASS.items():
        per_fold = [counts[f][label] for f in counts]
        assert min(per_fold) >= 1  # each fold validates on every class
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n  # balanced by distinct groups
    tr, va = train_val(split, 2)
    assert {r.fold for r in va} == {"2"} and not {r.group for r in tr} & {r.group for r in va}
    assert len(tr) + len(va) == len(split)


def test_reproducible_from_seed():
    rows = synthetic_rows()
    a = make_splits(rows, SplitConfig(folds=4, seed=7))
    b = make_splits(list(reversed(rows)), SplitConfig(folds=4, seed=7))
    assert {r.path: r.fold for r in a} == {r.path: r.fold for r in b}  # independent of row order too
    c = make_splits(rows, SplitConfig(folds=4, seed=8))
    assert {r.path: r.fold for r in a} != {r.path: r.fold for r in c}


def test_test_fraction_held_out_by_group():
    rows = synthetic_rows()
    split = make_splits(rows, SplitConfig(folds=3, seed=1, test_fraction=0.25))
    sides = fold_of_groups(split)
    assert all(len(f) == 1 for f in sides.values())
    counts = split_counts(split)
    assert list(counts) == ["0", "1", "2", TEST]
    for label, n in GROUPS_PER_CLASS.items():
        assert counts[TEST][label] == max(1, round(0.25 * n))
        assert all(counts[f][label] >= 1 for f in ("0", "1", "2"))
    assert all(r.is_test and r.fold_index is None for r in split if r.fold == TEST)
    tr, va = train_val(split, 0)
    assert not any(r.is_test for r in tr + va)
    again = make_splits(rows, SplitConfig(folds=3, seed=1, test_fraction=0.25))
    assert [r.fold for r in again] == [r.fold for r in split]
    text = split_summary_text(split)
    assert "test" in text and "myocardial_infarction" in text


def test_validation_errors():
    rows = synthetic_rows()
    with pytest.raises(ValueError, match="at least 2 folds"):
        make_splits(rows, SplitConfig(folds=1))
    for f in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            make_splits(rows, SplitConfig(test_fraction=f))
    with pytest.raises(ValueError, match="class 'myocardial_infarction' has 6 distinct group") as err:
        make_splits(rows, SplitConfig(folds=7))
    assert "normal" not in str(err.value)  # names only the short class
    with pytest.raises(ValueError, match="myocardial_infarction"):
        make_splits(rows, SplitConfig(folds=5, test_fraction=0.4))  # 6 - 2 = 4 groups left for 5 folds
    with pytest.raises(ValueError, match="no usable rows"):
        make_splits([r for r in rows if not r.ok], SplitConfig())


def test_files_round_trip_and_cli(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    write_manifest(synthetic_rows(), manifest)
    out = tmp_path / "out" / "splits.csv"
    split = make_splits(manifest, SplitConfig(folds=3, seed=0, test_fraction=0.2), out=out)
    assert read_splits(out) == split
    assert out.read_text().splitlines()[0] == "path,label,group,fold"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"] == {"folds": 3, "seed": 0, "test_fraction": 0.2}
    assert meta["excluded_bad"] == 2 and meta["groups"] == sum(GROUPS_PER_CLASS.values())

    cli_out = tmp_path / "cli.csv"
    assert (
        main(
            [
                "data",
                "split",
                str(manifest),
                "--folds",
                "3",
                "--seed",
                "0",
                "--test-fraction",
                "0.2",
                "--out",
                str(cli_out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "distinct groups per fold and class" in captured.out
    assert [r.fold for r in read_splits(cli_out)] == [r.fold for r in split]
    assert main(["data", "split", str(manifest), "--folds", "9", "--out", str(cli_out)]) == 2
    assert "too few groups" in capsys.readouterr().err


def test_user_csv_without_groups_and_mixed_groups(tmp_path, caplog):
    csv_path = tmp_path / "list.csv"
    lines = ["path,label,group"]
    for g, labels in enumerate(["aab", "bba", "aab", "bba"]):  # patient groups holding two labels
        lines += [f"p{g}_{k}.jpg,{label},p{g}" for k, label in enumerate(labels)]
    csv_path.write_text("\n".join(lines) + "\n")
    split = make_splits(csv_path, SplitConfig(folds=2, seed=0))
    assert "more than one label" in caplog.text
    assert all(len(f) == 1 for f in fold_of_groups(split).values())
    assert len(split) == 12 and Counter(r.fold for r in split) == {"0": 6, "1": 6}  # one "a" and one "b" group each

    bare = tmp_path / "bare.csv"
    bare.write_text("path,label\n" + "".join(f"x{i}.jpg,{'a' if i % 2 else 'b'}\n" for i in range(8)))
    split = make_splits(bare, SplitConfig(folds=2, seed=0))
    assert "duplicates are NOT grouped" in caplog.text
    assert Counter(r.fold for r in split) == {"0": 4, "1": 4}


def test_index_then_split_keeps_duplicates_together(tmp_path, class_tree):
    root = class_tree({"a": 4, "b": 4})
    for k in range(3):
        shutil.copy(root / "a" / "p000.jpg", root / "a" / f"copy{k}.jpg")
    manifest = tmp_path / "m.csv"
    index_dataset(root, out=manifest, progress=False)
    split = make_splits(manifest, SplitConfig(folds=2, seed=0))
    folds = {
        r.fold
        for r in split
        if r.group == next(s.group for s in split if s.path.endswith("p000.jpg") and s.label == "a")
    }
    assert len(folds) == 1 and len(split) == 11
