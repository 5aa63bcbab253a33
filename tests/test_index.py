"""`ecgvit data index`: layouts, duplicate groups, label conflicts, bad inputs, manifest round trip."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecgvit.cli import main
from ecgvit.config import KHAN_CLASSES, IndexConfig
from ecgvit.data import index as index_mod
from ecgvit.data.index import index_dataset, khan_label, summary_counts, summary_text
from ecgvit.data.manifest import MANIFEST_COLUMNS, ManifestRow, read_manifest, write_manifest

KHAN_FOLDERS = {
    "normal": "Normal Person ECG Images (284x12=3408)",
    "myocardial_infarction": "ECG Images of Myocardial Infarction Patients (240x12=2880)",
    "abnormal_heartbeat": "ECG Images of Patient that have abnormal heartbeat (233x12=2796)",
    "history_of_mi": "ECG Images of Patient that have History of MI (172x12=2064)",
}


def strip_suffix(name: str) -> str:
    return name.split(" (")[0]


def by_name(rows: list[ManifestRow], label: str | None = None) -> dict[str, ManifestRow]:
    out = {Path(r.path).name: r for r in rows if label is None or r.label == label}
    assert len(out) == len([r for r in rows if label is None or r.label == label]), "file names must be unique here"
    return out


def reencode(src: Path, dst: Path, quality: int = 75) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).save(dst, "JPEG", quality=quality)
    return dst


# ----------------------------------------------------------------------------- layouts


def test_khan_label_matching():
    for label, folder in KHAN_FOLDERS.items():
        assert khan_label(folder) == label
        assert khan_label(strip_suffix(folder)) == label
        assert khan_label(folder.upper()) == label
    assert khan_label("history_of_mi") == "history_of_mi"
    assert khan_label("abnormal-heartbeat") == "abnormal_heartbeat"
    assert khan_label("normal") is None  # plain folder name: label is the name itself
    assert khan_label("train") is None


def test_khan_layout_with_and_without_suffix(tmp_path, make_page):
    root = tmp_path / "khan"
    seed = 0
    for i, (label, folder) in enumerate(KHAN_FOLDERS.items()):
        name = folder if i % 2 == 0 else strip_suffix(folder)  # half with the count suffix, half without
        for k in range(2):
            make_page(root / name / f"{label[:3]}({k}).jpg", seed)
            seed += 1
    (root / KHAN_FOLDERS["normal"] / "notes.txt").write_text("not an image, skipped")
    rows = index_dataset(root, out=tmp_path / "m.csv", progress=False)
    assert len(rows) == 8
    assert {r.label for r in rows} == set(KHAN_CLASSES)
    assert all(r.ok and r.md5 and r.group for r in rows)
    assert all((r.width, r.height) == (600, 428) for r in rows)
    assert [(r.label, r.path) for r in rows] == sorted((r.label, r.path) for r in rows)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["layout"] == "khan"
    assert meta["config"]["near_dup_bits"] == IndexConfig().near_dup_bits
    assert meta["summary"]["files"] == 8 and meta["summary"]["per_class"]["normal"]["distinct"] == 2


def test_khan_layout_nested_train_test(tmp_path, make_page):
    root = tmp_path / "khan"
    seed = 0
    for part in ("train", "test"):
        for label, folder in KHAN_FOLDERS.items():
            make_page(root / part / folder / f"{part}_{label}.jpg", seed)
            seed += 1
    rows = index_dataset(root, progress=False)
    assert len(rows) == 8
    assert sorted(r.label for r in rows) == sorted(list(KHAN_CLASSES) * 2)
    assert all(os.path.isabs(r.path) for r in rows)


def test_one_folder_per_class_skips_non_images(tmp_path, class_tree, make_page):
    root = class_tree({"cats": 2, "dogs": 3})
    # generic nesting: the folder holding the image is the class
    make_page(root / "extra" / "train" / "birds" / "b.png", 100)
    for junk in ("readme.txt", ".DS_Store", "p000.json", "p000.npz", "._p000.jpg"):
        (root / "cats" / junk).write_bytes(b"\x00\x01junk")
    rows = index_dataset(root, progress=False)
    assert sorted({r.label for r in rows}) == ["birds", "cats", "dogs"]
    assert len(rows) == 6 and all(r.ok for r in rows)
    assert summary_counts(rows)["per_class"]["dogs"] == {"files": 3, "distinct": 3, "groups": 3, "bad": 0}


def test_images_outside_class_folders(tmp_path, class_tree, make_page):
    root = class_tree({"a": 1, "b": 1})
    make_page(root / "stray.jpg", 50)
    with pytest.warns(UserWarning, match="not in a class folder"):
        rows = index_dataset(root, progress=False)
    assert len(rows) == 2
    flat = tmp_path / "flat"
    make_page(flat / "x.jpg", 1)
    with pytest.raises(ValueError, match="no class folders"):
        index_dataset(flat, progress=False)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        index_dataset(tmp_path / "empty", progress=False)
    with pytest.raises(FileNotFoundError):
        index_dataset(tmp_path / "missing", progress=False)


def test_csv_source_relative_absolute_and_groups(tmp_path, make_page):
    data = tmp_path / "data"
    a = make_page(data / "a.jpg", 1)
    b = make_page(data / "b.jpg", 2)
    c = make_page(tmp_path / "elsewhere" / "c.jpg", 3)
    d = make_page(data / "d.jpg", 4)
    csv_path = data / "list.csv"
    csv_path.write_text(f"path,label,group\na.jpg,x,p1\nb.jpg,x,p1\n{c},y,\nd.jpg,y,\nmissing.jpg,y,\n")
    rows = index_dataset(csv_path, out=tmp_path / "out" / "m.csv", progress=False)
    r = by_name(rows)
    assert r["a.jpg"].group == r["b.jpg"].group  # a group given in the CSV joins distinct pages
    assert r["c.jpg"].group != r["d.jpg"].group
    assert r["c.jpg"].path == str(c) and r["a.jpg"].path == str(a)
    assert r["missing.jpg"].status == "bad" and "unreadable" in r["missing.jpg"].reason
    assert json.loads((tmp_path / "out" / "m.json").read_text())["layout"] == "csv"
    assert summary_counts(rows)["near_duplicate_groups"] == 1
    del b, d


# ----------------------------------------------------------------------------- duplicates


def test_exact_and_near_duplicates(tmp_path, class_tree, make_page):
    root = class_tree({"a": 3, "b": 2})
    src = root / "a" / "p000.jpg"
    shutil.copy(src, root / "a" / "copy1.jpg")
    shutil.copy(src, root / "a" / "z copy2.jpg")
    reencode(src, root / "a" / "reencoded.jpg")  # a slightly re-encoded copy: near duplicate
    make_page(root / "a" / "reheaded.jpg", 0, header="ID 999999  2021-01-01 00:00")  # same trace, new header

    rows = index_dataset(root, progress=False)
    r = by_name(rows, "a")
    assert r["copy1.jpg"].md5 == r["p000.jpg"].md5 == r["z copy2.jpg"].md5
    assert r["copy1.jpg"].duplicate_of == ""  # first by path: ".../a/copy1.jpg" < ".../a/p000.jpg"
    assert r["p000.jpg"].duplicate_of == r["copy1.jpg"].path
    assert r["z copy2.jpg"].duplicate_of == r["copy1.jpg"].path
    dup_group = r["p000.jpg"].group
    assert r["reencoded.jpg"].group == dup_group and r["reheaded.jpg"].group == dup_group
    assert r["reencoded.jpg"].md5 != r["p000.jpg"].md5 and r["reencoded.jpg"].duplicate_of == ""
    others = {r[n].group for n in ("p001.jpg", "p002.jpg")} | {x.group for x in rows if x.label == "b"}
    assert len(others) == 4 and dup_group not in others  # distinct pages stay apart
    c = summary_counts(rows)
    assert (c["files"], c["distinct"], c["groups"], c["near_duplicate_groups"]) == (9, 7, 5, 1)
    assert sorted({x.group for x in rows}) == [f"g{i:04d}" for i in range(1, 6)]
    text = summary_text(rows)
    assert "9 files, 7 distinct images, 5 groups, 1 near-duplicate groups beyond exact ones, 0 bad files" in text

    # 0 disables near-duplicate grouping: the re-encoded and re-headed copies become their own groups
    rows0 = index_dataset(root, cfg=IndexConfig(near_dup_bits=0), progress=False)
    r0 = by_name(rows0, "a")
    assert r0["copy1.jpg"].group == r0["p000.jpg"].group
    assert len({r0[n].group for n in ("p000.jpg", "reencoded.jpg", "reheaded.jpg")}) == 3
    assert summary_counts(rows0)["groups"] == 7 and summary_counts(rows0)["near_duplicate_groups"] == 0


def test_deterministic(tmp_path, class_tree):
    root = class_tree({"a": 3, "b": 3})
    shutil.copy(root / "a" / "p001.jpg", root / "a" / "dup.jpg")
    assert index_dataset(root, progress=False) == index_dataset(root, progress=False)


def test_label_conflict_exact_names_both_files(tmp_path, class_tree):
    root = class_tree({"normal": 2, "sick": 2})
    shutil.copy(root / "normal" / "p001.jpg", root / "sick" / "same.jpg")
    with pytest.raises(ValueError) as err:
        index_dataset(root, progress=False)
    msg = str(err.value)
    assert str(root / "normal" / "p001.jpg") in msg and str(root / "sick" / "same.jpg") in msg
    assert "(normal)" in msg and "(sick)" in msg and "identical" in msg


def test_label_conflict_near_duplicate(tmp_path, class_tree):
    root = class_tree({"normal": 2, "sick": 2})
    reencode(root / "normal" / "p000.jpg", root / "sick" / "looks_same.jpg")
    with pytest.raises(ValueError, match="near duplicates") as err:
        index_dataset(root, progress=False)
    assert "looks_same.jpg" in str(err.value) and "p000.jpg" in str(err.value)
    # with near matching off, it is not the same content any more
    rows = index_dataset(root, cfg=IndexConfig(near_dup_bits=0), progress=False)
    assert len(rows) == 5


def test_cli_index_and_conflict_exit_code(tmp_path, class_tree, capsys):
    root = class_tree({"a": 2, "b": 2})
    out = tmp_path / "m.csv"
    assert main(["data", "index", str(root), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "4 files, 4 distinct images, 4 groups" in printed and out.exists()
    shutil.copy(root / "a" / "p000.jpg", root / "b" / "x.jpg")
    assert main(["data", "index", str(root), "--out", str(out), "--quiet"]) == 2
    assert "two labels" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad inputs


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb that would not decode)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )
    return path


def test_bad_inputs_never_crash(tmp_path, make_page, monkeypatch):
    from conftest import page_image

    d = tmp_path / "data" / "cls"
    good = make_page(d / "good.jpg", 1)
    make_page(tmp_path / "data" / "other" / "good2.jpg", 2)
    (d / "empty.jpg").write_bytes(b"")
    raw = good.read_bytes()
    (d / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    png = make_page(d / "corrupt_src.png", 3).read_bytes()
    (d / "corrupt_src.png").unlink()
    bad_png = bytearray(png)
    bad_png[16:24] = b"\xff" * 8  # IHDR fields and its CRC no longer agree
    (d / "corrupt.png").write_bytes(bytes(bad_png))
    (d / "text.jpg").write_text("this is not a JPEG")
    Image.new("RGB", (100, 80), "white").save(d / "tiny.png")
    _png_header_only(d / "bomb.png", 100_000, 100_000)
    Image.new("L", (1200, 1000), 255).save(d / "large.png")  # above the max_pixels given below
    page = page_image(4)
    page.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(np.asarray(page.convert("L"), dtype=np.uint16) * 257).save(d / "sixteen.png")
    assert Image.open(d / "sixteen.png").mode.startswith("I")
    page_image(5).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    page_image(6).convert("RGBA").save(d / "alpha.png")
    page_image(7).convert("LA").save(d / "gray_alpha.png")
    pal = page_image(8).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(d / "palette_transparent.png", transparency=0)
    (d / "broken_link.jpg").symlink_to(d / "does_not_exist.jpg")
    os.mkfifo(d / "fifo.jpg")
    make_page(d / "locked.jpg", 9)

    real_md5 = index_mod._md5

    def md5_or_denied(path: str) -> str:
        if path.endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", path)
        return real_md5(path)

    monkeypatch.setattr(index_mod, "_md5", md5_or_denied)
    rows = index_dataset(tmp_path / "data", cfg=IndexConfig(max_pixels=1_000_000, near_dup_bits=0), progress=False)
    r = by_name(rows)
    expect_bad = {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
        "corrupt.png": "not an image",
        "text.jpg": "not an image",
        "tiny.png": "too small",
        "bomb.png": "too large",
        "large.png": "too large",
        "broken_link.jpg": "unreadable",
        "fifo.jpg": "not a regular file",
        "locked.jpg": "Permission denied",
    }
    for name, words in expect_bad.items():
        assert r[name].status == "bad", (name, r[name])
        assert words in r[name].reason, (name, r[name].reason)
        assert r[name].group == ""
    expect_ok = {
        "good.jpg": "",
        "good2.jpg": "",
        "cmyk.jpg": "CMYK",
        "sixteen.png": "16-bit",
        "palette.png": "palette",
        "alpha.png": "alpha",
        "gray_alpha.png": "alpha",
        "palette_transparent.png": "palette",
    }
    for name, words in expect_ok.items():
        assert r[name].status == "ok", (name, r[name])
        assert words in r[name].reason, (name, r[name].reason)
        assert r[name].group and r[name].width >= 256
    assert set(r) == set(expect_bad) | set(expect_ok)
    text = summary_text(rows)
    assert f"{len(expect_bad)} bad files" in text and "bad:" in text


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_permissions(tmp_path, class_tree):
    root = class_tree({"a": 2})
    locked = root / "a" / "p001.jpg"
    locked.chmod(0)
    try:
        r = by_name(index_dataset(root, progress=False))
    finally:
        locked.chmod(0o644)
    assert r["p001.jpg"].status == "bad" and "unreadable" in r["p001.jpg"].reason


ODD_NAMES = [
    "with space.jpg",
    "ünïcödé 心电图.jpg",
    'quote"d.jpg',
    "it's.jpg",
    "comma,name.jpg",
    "new\nline.jpg",
    " lead.jpg",
]


def test_odd_file_names_round_trip(tmp_path, make_page):
    root = tmp_path / "data"
    for i, name in enumerate(ODD_NAMES):
        make_page(root / ("cls, odd" if i % 2 else "plain") / name, i)
    out = root / "manifest.csv"
    rows = index_dataset(root, out=out, progress=False)
    assert sorted(Path(r.path).name for r in rows) == sorted(ODD_NAMES)
    assert all(r.ok for r in rows)
    back = read_manifest(out)
    assert back == rows
    # inside the manifest's folder: relative paths
    assert not out.read_text().splitlines()[1].startswith("/")


def test_non_utf8_file_name_round_trip(tmp_path, make_page):
    root = tmp_path / "data"
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 byte, not UTF-8: surrogate-escaped
    make_page(root / "cls" / name, 1)
    out = tmp_path / "m.csv"
    rows = index_dataset(root, out=out, progress=False)
    assert rows[0].ok and read_manifest(out) == rows


# ----------------------------------------------------------------------------- manifest I/O


def test_manifest_paths_and_user_csv(tmp_path):
    rows = [
        ManifestRow(path=str(tmp_path / "m" / "a.jpg"), label="x", md5="0" * 32, width=10, height=20, group="g0001"),
        ManifestRow(path="/elsewhere/b.jpg", label="y", group="g0002", duplicate_of=str(tmp_path / "m" / "a.jpg")),
        ManifestRow(path=str(tmp_path / "m" / "c.jpg"), label="y", status="bad", reason="empty file (0 bytes)"),
    ]
    out = tmp_path / "m" / "manifest.csv"
    write_manifest(rows, out)
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(MANIFEST_COLUMNS)
    assert lines[1].startswith("a.jpg,") and lines[2].startswith("/elsewhere/b.jpg,") and ",a.jpg," in lines[2]
    assert read_manifest(out) == rows
    assert not (tmp_path / "m" / "manifest.csv.tmp").exists()

    user = tmp_path / "u" / "list.csv"
    user.parent.mkdir()
    user.write_text("\ufeffPath, Label\nimgs/a.jpg,normal\n/abs/b.png, mi\n")
    urows = read_manifest(user)
    assert [(r.path, r.label, r.status, r.group, r.md5) for r in urows] == [
        (str(tmp_path / "u" / "imgs" / "a.jpg"), "normal", "ok", "", ""),
        ("/abs/b.png", "mi", "ok", "", ""),
    ]
    assert urows[0].group_key.startswith("file:")

    (tmp_path / "bad.csv").write_text("file,class\na.jpg,x\n")
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "nolabel.csv").write_text("path,label\na.jpg,\n")
    with pytest.raises(ValueError, match="empty label"):
        read_manifest(tmp_path / "nolabel.csv")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "nope.csv")
