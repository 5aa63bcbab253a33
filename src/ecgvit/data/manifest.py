"""The manifest: one CSV row per page file, the contract between `ecgvit data index` and every
later stage (splits, training, crop sheet, preprocessing cache).

Later stages read manifests only through `read_manifest`, which accepts either a manifest written
by `write_manifest` or a user CSV with just `path,label[,group]` columns. In memory every path is
absolute; on disk paths under the manifest's folder are written relative to it (so a dataset
folder with its manifest can be moved as a whole), anything else absolute.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

# Column order of a written manifest.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "md5",
    "width",
    "height",
    "group",
    "duplicate_of",
    "status",
    "reason",
)

# Non-UTF-8 bytes in file names (possible on Linux) round-trip through the CSV unchanged.
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


@dataclass
class ManifestRow:
    """One page file.

    path: absolute path of the file.
    label: class name (canonical Khan names for the Khan layout).
    md5: hex md5 of the file bytes ("" when unknown: user CSV, or the file could not be read).
    width, height: full pixel size of the image (0 when unknown or bad).
    group: id shared by every file of one exact- or near-duplicate group ("g0001", ...); a user
        CSV may bring its own ids; "" for bad files. Use `group_key` to split by.
    duplicate_of: absolute path of the first file (sorted) with the same bytes; "" for the first.
    status: "ok" or "bad".
    reason: why a file is bad, or a note for an ok one (e.g. "converted from CMYK").
    """

    path: str
    label: str
    md5: str = ""
    width: int = 0
    height: int = 0
    group: str = ""
    duplicate_of: str = ""
    status: str = "ok"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def group_key(self) -> str:
        """The group to keep on one side of any split: `group`, or the file itself if none."""
        return self.group or f"file:{self.path}"


def sort_key(row: ManifestRow) -> tuple[str, str]:
    """Canonical manifest row order: label, then path."""
    return (row.label, row.path)


def portable_path(path: str | os.PathLike[str], base_dir: str | os.PathLike[str]) -> str:
    """`path` relative to `base_dir` if it lies under it, else absolute (POSIX separators kept)."""
    if not str(path):
        return ""
    p = os.path.abspath(path)
    base = os.path.abspath(base_dir)
    try:
        if os.path.commonpath([p, base]) == base:
            return os.path.relpath(p, base)
    except ValueError:  # different drives on Windows
        pass
    return p


def resolve_path(path: str, base_dir: str | os.PathLike[str]) -> str:
    """Absolute form of a path read from a CSV in `base_dir` ("" stays "")."""
    if not path:
        return ""
    p = os.path.expanduser(path)
    if not os.path.isabs(p):
        p = os.path.join(base_dir, p)
    return os.path.abspath(p)


def write_manifest(rows: list[ManifestRow], path: str | os.PathLike[str]) -> None:
    """Write `rows` as CSV atomically (temp file + rename), paths relative to the CSV's folder
    where possible. Rows are written in the order given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding=_ENCODING, errors=_ERRORS) as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for r in rows:
            w.writerow(
                [
                    portable_path(r.path, base),
                    r.label,
                    r.md5,
                    r.width,
                    r.height,
                    r.group,
                    portable_path(r.duplicate_of, base) if r.duplicate_of else "",
                    r.status,
                    r.reason,
                ]
            )
    tmp.replace(path)


def _int(value: str, what: str, where: str) -> int:
    value = (value or "").strip()
    if not value:
        return 0
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{where}: {what}={value!r} is not a number") from None


def read_csv_rows(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(lower-cased header, [(line number, {column: value})]) of a CSV; BOM and blank lines tolerated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8-sig", errors=_ERRORS) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty CSV (expected a header with at least path,label)") from None
        out = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            out.append((reader.line_num, dict(zip(header, row, strict=False))))
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'} (need at least path,label[,group])"
        )
    return header, out


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Rows of a manifest CSV, paths absolute (relative ones resolved against the CSV's folder).

    Accepts a manifest written by `write_manifest`, or a user CSV with only `path,label[,group]`
    (then md5/size are unknown, status is "ok" — not checked — and `group` is what the CSV says).
    Extra columns are ignored. Row order is kept.
    """
    path = Path(path)
    _, records = read_csv_rows(path)
    base = path.parent.resolve()
    rows: list[ManifestRow] = []
    for line, rec in records:
        where = f"{path}:{line}"
        p = rec.get("path") or ""  # not stripped: file names may start or end with spaces
        label = (rec.get("label") or "").strip()
        if not p.strip():
            raise ValueError(f"{where}: empty path")
        if not label:
            raise ValueError(f"{where}: empty label for {p!r}")
        status = (rec.get("status") or "ok").strip().lower()
        if status not in ("ok", "bad"):
            raise ValueError(f"{where}: status={status!r}, expected 'ok' or 'bad'")
        rows.append(
            ManifestRow(
                path=resolve_path(p, base),
                label=label,
                md5=(rec.get("md5") or "").strip().lower(),
                width=_int(rec.get("width", ""), "width", where),
                height=_int(rec.get("height", ""), "height", where),
                group=(rec.get("group") or "").strip(),
                duplicate_of=resolve_path(rec.get("duplicate_of") or "", base),
                status=status,
                reason=rec.get("reason") or "",
            )
        )
    return rows
