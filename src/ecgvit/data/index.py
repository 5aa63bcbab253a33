"""`ecgvit data index`: scan a dataset into a manifest with md5s, sizes, duplicate groups and bad files.

Sources:
  * the Khan & Hussain Mendeley layout: class folders recognised by keywords in their names
    ("normal person", "myocardial infarction", "abnormal heartbeat", "history of mi"; case and
    the "(284x12=3408)" suffix do not matter), at any depth (e.g. root/train/Normal Person.../);
    labels become the canonical KHAN_CLASSES names;
  * any one-folder-per-class layout: the label is the name of the folder holding the image;
  * a CSV with `path,label[,group]` (paths relative to the CSV's folder, or absolute).

Groups: files with the same bytes (md5) form one group; distinct files whose trace-area pHashes
are within `near_dup_bits` Hamming bits are joined into the same group too (union-find), and so
are files sharing a `group` given in an input CSV. Splits keep every group on one side.
Same content (exact or near) under two labels is an error: the labels are wrong somewhere.

Bad files (empty, truncated, corrupt, not an image, too small or too large, unreadable, not a
regular file) get status "bad" and a reason; the scan goes on. Files in class folders whose
suffix is not an image suffix (.txt, .json, .npz sidecars, .DS_Store) and hidden files
(".name", e.g. macOS "._x.jpg" resource forks) are skipped silently.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgvit.config import KHAN_CLASSES, IndexConfig, PreprocessConfig, save_json, to_dict
from ecgvit.data.io import IMAGE_SUFFIXES, BadImageError, open_page
from ecgvit.data.manifest import ManifestRow, portable_path, read_csv_rows, resolve_path, sort_key, write_manifest

log = logging.getLogger("ecgvit")

# Keyword (after lower-casing and turning "_"/"-" into spaces) -> canonical label. Order matters
# only in theory; no Khan folder name holds two of them.
KHAN_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("history of mi", "history_of_mi"),
    ("myocardial infarction", "myocardial_infarction"),
    ("abnormal heartbeat", "abnormal_heartbeat"),
    ("normal person", "normal"),
)
assert {label for _, label in KHAN_KEYWORDS} == set(KHAN_CLASSES)

# Decode JPEGs at a reduced DCT scale for hashing: plenty for a 16x16 pHash.
HASH_DRAFT_SIZE = (512, 512)
_SKIP_DIRS = {"__MACOSX"}
_MAX_LISTED_PAIRS = 1000


def khan_label(folder_name: str) -> str | None:
    """Canonical Khan label for a folder name, or None if it is not a Khan class folder."""
    norm = re.sub(r"[\s_\-]+", " ", folder_name.lower()).strip()
    for keyword, label in KHAN_KEYWORDS:
        if keyword in norm:
            return label
    return None


@dataclass
class _Entry:
    path: str  # absolute
    label: str
    source_group: str = ""  # group given by an input CSV


# ----------------------------------------------------------------------------- discovery


def _discover_folder(root: Path, notes: list[str]) -> tuple[str, list[_Entry]]:
    root_abs = os.path.abspath(root)
    entries: list[_Entry] = []
    orphans: list[str] = []
    khan_hits = 0
    for dirpath, dirnames, filenames in os.walk(root_abs):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        rel_parts = Path(os.path.relpath(dirpath, root_abs)).parts if dirpath != root_abs else ()
        label: str | None = None
        for part in reversed(rel_parts):  # nearest Khan class folder wins
            label = khan_label(part)
            if label:
                break
        from_khan = label is not None
        if label is None and rel_parts:
            label = rel_parts[-1]
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = os.path.join(dirpath, name)
            if label is None:
                orphans.append(path)
                continue
            khan_hits += from_khan
            entries.append(_Entry(path, label))
    if orphans:
        if not entries:
            raise ValueError(
                f"{root}: {len(orphans)} image(s) but no class folders; expected one folder per class "
                f"(e.g. {root}/normal/*.jpg), the Khan & Hussain layout, or a CSV with path,label"
            )
        msg = f"{len(orphans)} image(s) directly in {root} ignored: not in a class folder (e.g. {orphans[0]})"
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
    layout = "khan" if khan_hits else "folders"
    # Worth a note only for labels that are not class names already (a folder "normal" beside
    # the Khan folders means what it says).
    renamed = sum(e.label not in KHAN_CLASSES for e in entries)
    if khan_hits and renamed:
        notes.append(f"{renamed} file(s) in folders that are not Khan class folders keep their folder name as label")
    return layout, entries


def _discover_csv(csv_path: Path, notes: list[str]) -> list[_Entry]:
    _, records = read_csv_rows(csv_path)
    base = csv_path.parent.resolve()
    entries: list[_Entry] = []
    seen: set[tuple[str, str]] = set()
    dropped = 0
    for line, rec in records:
        p = rec.get("path") or ""
        label = (rec.get("label") or "").strip()
        if not p.strip():
            raise ValueError(f"{csv_path}:{line}: empty path")
        if not label:
            raise ValueError(f"{csv_path}:{line}: empty label for {p!r}")
        path = resolve_path(p, base)
        if (path, label) in seen:
            dropped += 1
            continue
        seen.add((path, label))
        entries.append(_Entry(path, label, (rec.get("group") or "").strip()))
    if dropped:
        notes.append(f"{dropped} repeated (path, label) line(s) in {csv_path} kept once")
    return entries


# ----------------------------------------------------------------------------- hashing


def _md5(path: str) -> str:
    from ecgvit.data.preprocess import file_md5

    return file_md5(path)


_TraceBoxFn = Callable[[Any], Any]
_trace_box_cache: list[_TraceBoxFn | None] = []


def _find_trace_box() -> _TraceBoxFn | None:
    """`ecgvit.data.crop.find_trace_box` if that module provides it, else None (fixed fallback box)."""
    if not _trace_box_cache:
        fn = None
        try:
            from ecgvit.data import crop  # noqa: PLC0415 — optional, written by another stage

            fn = getattr(crop, "find_trace_box", None)
        except ModuleNotFoundError as exc:
            if exc.name not in ("ecgvit.data.crop",):
                warnings.warn(
                    f"ecgvit.data.crop could not be imported ({exc}); hashing the fixed fallback box", stacklevel=2
                )
        except Exception as exc:  # a broken crop module must not stop indexing
            warnings.warn(
                f"ecgvit.data.crop could not be imported ({exc!r}); hashing the fixed fallback box", stacklevel=2
            )
        _trace_box_cache.append(fn)
    return _trace_box_cache[0]


def _fallback_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = size
    left, top, right, bottom = PreprocessConfig().fallback_box
    return (round(left * w), round(top * h), round(right * w), round(bottom * h))


def trace_area(img: Any) -> tuple[Any, bool]:
    """(crop of the trace area, detected?) — find_trace_box when available, else the fixed box."""
    fn = _find_trace_box()
    box = None
    detected = False
    if fn is not None:
        try:
            res = fn(img)
            box = tuple(int(v) for v in res.box)
            detected = bool(res.detected)
        except Exception:
            box = None
    w, h = img.size
    if box is None or len(box) != 4 or not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h):
        box, detected = _fallback_box(img.size), False
    return img.crop(box), detected


def _phash_bits(img: Any, hash_size: int) -> np.ndarray:
    import imagehash

    return np.packbits(np.asarray(imagehash.phash(img, hash_size=hash_size).hash, dtype=bool).ravel())


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_matrix_rows(packed: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Hamming distances (bits) between rows start:stop of `packed` (n, bytes uint8) and all rows."""
    x = packed[start:stop, None, :] ^ packed[None, :, :]
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)
    return _POPCOUNT[x].sum(axis=-1, dtype=np.int32)


def near_pairs(
    packed: np.ndarray, max_bits: int, chunk: int = 256
) -> tuple[list[tuple[int, int, int]], tuple[int, int, int] | None]:
    """([(i, j, bits)] with i < j and bits <= max_bits, closest pair (i, j, bits) or None)."""
    n = len(packed)
    pairs: list[tuple[int, int, int]] = []
    closest: tuple[int, int, int] | None = None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        d = hamming_matrix_rows(packed, start, stop)
        ii, jj = np.nonzero(np.triu(np.ones_like(d, dtype=bool), k=start + 1))
        if len(ii) == 0:
            continue
        vals = d[ii, jj]
        k = int(np.argmin(vals))
        if closest is None or int(vals[k]) < closest[2]:
            closest = (start + int(ii[k]), int(jj[k]), int(vals[k]))
        if max_bits > 0:
            sel = vals <= max_bits
            pairs.extend((start + int(i), int(j), int(v)) for i, j, v in zip(ii[sel], jj[sel], vals[sel], strict=False))
    return pairs, closest


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _mode_note(mode: str) -> str:
    if mode in ("RGB", "L"):
        return ""
    if mode.startswith("I;16") or mode == "I":
        return f"converted from {mode} (16-bit) to 8-bit RGB"
    if mode == "P":
        return "converted from palette (P) to RGB"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return f"converted from {mode}: alpha composited on white"
    return f"converted from {mode} to RGB"


# ----------------------------------------------------------------------------- main entry


def index_dataset(
    source: str | os.PathLike[str],
    cfg: IndexConfig = IndexConfig(),
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[ManifestRow]:
    """Scan `source` (dataset folder or path,label[,group] CSV) into manifest rows.

    Rows are sorted by (label, path), paths absolute. With `out`, writes the manifest CSV there
    and the config + summary counts next to it (manifest.csv -> manifest.json).
    Raises FileNotFoundError for a missing source, ValueError for a source with no images or
    for the same content (exact or near duplicate) under two labels.
    """
    t0 = time.perf_counter()
    if cfg.near_dup_bits < 0:
        raise ValueError(f"near_dup_bits={cfg.near_dup_bits}: must be >= 0 (0 disables near duplicates)")
    if cfg.hash_size < 2:
        raise ValueError(f"hash_size={cfg.hash_size}: must be >= 2")
    src = Path(source)
    notes: list[str] = []
    if src.is_dir():
        layout, entries = _discover_folder(src, notes)
    elif src.is_file():
        if src.suffix.lower() != ".csv":
            raise ValueError(f"{src}: expected a dataset folder or a .csv with path,label[,group]")
        layout, entries = "csv", _discover_csv(src, notes)
    else:
        raise FileNotFoundError(f"dataset not found: {src}")
    if not entries:
        raise ValueError(f"{src}: no image files found (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    entries.sort(key=lambda e: (e.label, e.path))

    rows = [ManifestRow(path=e.path, label=e.label) for e in entries]
    by_md5: dict[str, list[int]] = defaultdict(list)
    first_of: dict[str, int] = {}  # md5 -> index of the decoded row
    hashes: dict[str, np.ndarray] = {}
    detected = fallback = 0

    it: Iterable[int]
    try:
        from tqdm import tqdm

        it = tqdm(
            range(len(rows)), desc="index", unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True
        )
    except ImportError:  # pragma: no cover
        it = range(len(rows))
    for i in it:
        row = rows[i]
        try:
            st = os.stat(row.path)
            if not stat.S_ISREG(st.st_mode):
                raise BadImageError(row.path, "not a regular file")
            row.md5 = _md5(row.path)
        except BadImageError as exc:
            row.status, row.reason = "bad", exc.reason
            continue
        except OSError as exc:
            row.status, row.reason = "bad", f"unreadable file ({exc.strerror or exc})"
            continue
        by_md5[row.md5].append(i)
        if row.md5 in first_of:
            first = rows[first_of[row.md5]]
            row.width, row.height, row.status, row.reason = first.width, first.height, first.status, first.reason
            continue
        first_of[row.md5] = i
        try:
            img = open_page(row.path, max_pixels=cfg.max_pixels, min_side=cfg.min_side, draft_size=HASH_DRAFT_SIZE)
            row.width, row.height = img.info.get("full_size", img.size)
            row.reason = _mode_note(str(img.info.get("source_mode", "RGB")))
            if cfg.near_dup_bits > 0:
                crop, found = trace_area(img)
                detected += found
                fallback += not found
                hashes[row.md5] = _phash_bits(crop, cfg.hash_size)
        except BadImageError as exc:
            row.status, row.reason = "bad", exc.reason
        except Exception as exc:  # never let one file stop the scan
            row.status, row.reason = "bad", f"could not decode ({type(exc).__name__}: {exc})"

    # duplicate_of: the first file (by path) with the same bytes
    for idxs in by_md5.values():
        ordered = sorted(idxs, key=lambda k: rows[k].path)
        for k in ordered[1:]:
            rows[k].duplicate_of = rows[ordered[0]].path

    # exact duplicates under two labels
    conflicts: list[str] = []
    for md5, idxs in by_md5.items():
        ok = sorted((k for k in idxs if rows[k].ok), key=lambda k: rows[k].path)
        for k in ok[1:]:
            if rows[k].label != rows[ok[0]].label:
                a, b = rows[ok[0]], rows[k]
                conflicts.append(f"{a.path!r} ({a.label}) and {b.path!r} ({b.label}) are identical files (md5 {md5})")

    # near duplicates between distinct files (one hash per md5)
    ok_md5s = sorted((m for m in hashes if rows[first_of[m]].ok), key=lambda m: rows[first_of[m]].path)
    pairs: list[tuple[int, int, int]] = []
    closest = None
    if len(ok_md5s) >= 2:
        packed = np.stack([hashes[m] for m in ok_md5s])
        pairs, closest = near_pairs(packed, cfg.near_dup_bits)
    for i, j, bits in pairs:
        a, b = rows[first_of[ok_md5s[i]]], rows[first_of[ok_md5s[j]]]
        if a.label != b.label:
            conflicts.append(
                f"{a.path!r} ({a.label}) and {b.path!r} ({b.label}) are near duplicates ({bits} bits apart in the trace-area pHash)"
            )
    if conflicts:
        more = f"\n  ... and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
        raise ValueError(
            f"same content under two labels ({len(conflicts)} case(s)); fix the labels or remove a copy"
            + (" (near-duplicate matching: --near-dup-bits, 0 disables)" if pairs else "")
            + ":\n  "
            + "\n  ".join(conflicts[:10])
            + more
        )

    # groups: union-find over distinct ok contents (md5), joined by near pairs and CSV groups
    all_ok_md5s = sorted({r.md5 for r in rows if r.ok}, key=lambda m: rows[first_of[m]].path)
    pos = {m: k for k, m in enumerate(all_ok_md5s)}
    uf = _UnionFind(len(all_ok_md5s))
    for i, j, _ in pairs:
        uf.union(pos[ok_md5s[i]], pos[ok_md5s[j]])
    by_source_group: dict[str, int] = {}
    for e, r in zip(entries, rows, strict=False):
        if r.ok and e.source_group:
            k = pos[r.md5]
            if e.source_group in by_source_group:
                uf.union(by_source_group[e.source_group], k)
            else:
                by_source_group[e.source_group] = k
    ids: dict[int, str] = {}
    n_groups = len({uf.find(k) for k in range(len(all_ok_md5s))})
    width = max(4, len(str(n_groups)))
    for r in rows:  # rows are in (label, path) order, so ids are deterministic
        if r.ok:
            root = uf.find(pos[r.md5])
            if root not in ids:
                ids[root] = f"g{len(ids) + 1:0{width}d}"
            r.group = ids[root]

    rows.sort(key=sort_key)  # already in this order (entries were sorted); kept as the contract
    elapsed = time.perf_counter() - t0
    if out is not None:
        out_path = Path(out)
        write_manifest(rows, out_path)
        base = out_path.parent.resolve()

        def rel(p: str) -> str:
            return portable_path(p, base)

        first_path: dict[str, str] = {}
        for r in rows:  # rows are sorted, so this is the smallest path per md5
            if r.md5 and r.md5 not in first_path:
                first_path[r.md5] = r.path

        def pair_info(i: int, j: int, bits: int) -> dict[str, Any]:
            return {"a": rel(first_path[ok_md5s[i]]), "b": rel(first_path[ok_md5s[j]]), "bits": bits}

        from ecgvit._version import __version__

        save_json(
            out_path.with_suffix(".json"),
            {
                "kind": "ecgvit-manifest",
                "ecgvit_version": __version__,
                "source": os.path.abspath(src),
                "layout": layout,
                "manifest": out_path.name,
                "config": to_dict(cfg),
                "summary": summary_counts(rows),
                "trace_box": {
                    "method": "find_trace_box" if _find_trace_box() is not None else "fallback_box",
                    "detected": detected,
                    "fallback": fallback,
                    "fallback_box": list(PreprocessConfig().fallback_box),
                },
                "near_duplicates": {
                    "threshold_bits": cfg.near_dup_bits,
                    "pairs": [pair_info(*p) for p in pairs[:_MAX_LISTED_PAIRS]],
                    "pairs_total": len(pairs),
                    "closest_distinct": pair_info(*closest) if closest else None,
                },
                "notes": notes,
                "seconds": round(elapsed, 2),
            },
        )
    if progress:
        if cfg.near_dup_bits > 0 and closest is not None:
            log.info(
                f"near duplicates: {len(pairs)} pair(s) within {cfg.near_dup_bits} bits; closest distinct pages {closest[2]} bits apart "
                f"(trace area: {detected} detected, {fallback} fixed box)"
            )
        for n in notes:
            log.info(f"note: {n}")
    return rows


# ----------------------------------------------------------------------------- summary


def _class_order(labels: set[str]) -> list[str]:
    known = [c for c in KHAN_CLASSES if c in labels]
    return known + sorted(labels - set(known))


def summary_counts(rows: list[ManifestRow]) -> dict[str, Any]:
    """Counts behind `summary_text`, as a JSON-able dict."""
    ok = [r for r in rows if r.ok]
    md5s_per_group: dict[str, set[str]] = defaultdict(set)
    for r in ok:
        md5s_per_group[r.group_key].add(r.md5 or r.path)
    per_class: dict[str, dict[str, int]] = {}
    for label in _class_order({r.label for r in rows}):
        rs = [r for r in rows if r.label == label]
        rok = [r for r in rs if r.ok]
        per_class[label] = {
            "files": len(rs),
            "distinct": len({r.md5 or r.path for r in rok}),
            "groups": len({r.group_key for r in rok}),
            "bad": len(rs) - len(rok),
        }
    return {
        "files": len(rows),
        "distinct": len({r.md5 or r.path for r in ok}),
        "groups": len(md5s_per_group),
        "near_duplicate_groups": sum(len(v) > 1 for v in md5s_per_group.values()),
        "bad": len(rows) - len(ok),
        "bad_reasons": dict(Counter(r.reason.split(" (")[0].split(":")[0] for r in rows if not r.ok).most_common()),
        "per_class": per_class,
    }


def summary_text(rows: list[ManifestRow]) -> str:
    """Human summary: totals line, then per class files / distinct / groups / bad."""
    c = summary_counts(rows)
    lines = [
        f"{c['files']} files, {c['distinct']} distinct images, {c['groups']} groups, "
        f"{c['near_duplicate_groups']} near-duplicate groups beyond exact ones, {c['bad']} bad files"
    ]
    width = max([len("class")] + [len(k) for k in c["per_class"]])
    lines.append(f"  {'class':<{width}}  {'files':>6}  {'distinct':>8}  {'groups':>6}  {'bad':>4}")
    for label, pc in c["per_class"].items():
        lines.append(f"  {label:<{width}}  {pc['files']:>6}  {pc['distinct']:>8}  {pc['groups']:>6}  {pc['bad']:>4}")
    if c["bad_reasons"]:
        lines.append("  bad: " + "; ".join(f"{n} {reason}" for reason, n in c["bad_reasons"].items()))
    return "\n".join(lines)
