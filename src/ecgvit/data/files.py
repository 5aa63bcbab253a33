"""What a user names, expanded into the page files to read: files, folders (recursive), globs,
PDF and TIFF pages (`file.pdf#page=N`), and a reason for every name that gives no page.

Shared by `ecgvit predict` and `ecgvit digitize`: the same inputs give the same pages and the
same "bad" rows (a missing file, a glob that matches nothing, a broken or looping link, a FIFO,
an SVG in a folder scan).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgvit.data.io import INPUT_SUFFIXES, MULTIPAGE_SUFFIXES, count_pages, split_page

__all__ = ["UNSUPPORTED_IMAGE_SUFFIXES", "BadInput", "expand_inputs", "scan_folder"]


def expand_inputs(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[BadInput]]:
    """Files, folders (recursive, image and PDF suffixes) and globs -> (files in order, bad entries).

    A PDF or TIFF with more than one page becomes one entry per page, `f"{path}#page={i}"`
    (1-based); `path#page=N` may also be given directly. A path that does not exist or a glob
    that matches nothing is reported, not raised.
    """
    files: list[str] = []
    bad: list[BadInput] = []
    seen: set[str] = set()

    def add_one(s: str) -> None:
        if s not in seen:
            seen.add(s)
            files.append(s)

    def add(f: Path) -> None:
        n = count_pages(f) if f.suffix.lower() in MULTIPAGE_SUFFIXES else None
        if n is not None and n > 1:
            for i in range(1, n + 1):
                add_one(f"{f}#page={i}")
        else:
            add_one(str(f))  # one page, or uncountable: opening it reports why

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found, unreadable = scan_folder(p)
            bad.extend(unreadable)
            if not found and not unreadable:
                bad.append(BadInput(str(p), f"folder has no image files ({', '.join(sorted(INPUT_SUFFIXES))})"))
            for f in found:
                add(f)
        elif p.is_symlink() and not p.exists():
            bad.append(BadInput(str(p), _dangling_reason(p)))
        elif p.exists():
            add(p)
        elif split_page(str(raw))[1] is not None and split_page(str(raw))[0].exists():
            add_one(str(raw))  # "doc.pdf#page=2": that page only
        elif glob.has_magic(str(raw)):
            matches = sorted(glob.glob(str(raw), recursive=True))
            if not matches:
                bad.append(BadInput(str(raw), "no files match this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    found, unreadable = scan_folder(mp)
                    bad.extend(unreadable)
                    for f in found:
                        add(f)
                elif mp.suffix.lower() in INPUT_SUFFIXES | UNSUPPORTED_IMAGE_SUFFIXES or mp.is_symlink():
                    problem = _not_a_page_file(mp)
                    if problem:
                        bad.append(BadInput(str(mp), problem))
                    else:
                        add(mp)
        else:
            bad.append(BadInput(str(raw), "no such file or folder"))
    return files, bad


# Image formats people have that are not decoded: named in a row rather than skipped silently.
UNSUPPORTED_IMAGE_SUFFIXES = frozenset({".svg", ".svgz", ".heic", ".heif"})


def _dangling_reason(p: Path) -> str:
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back to itself)"
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    return f"broken symbolic link (its target {target} does not exist)"


def _not_a_page_file(p: Path) -> str | None:
    """Why `p` (an entry with a page-like name) cannot be read as a page file, or None."""
    if p.is_symlink() and not p.exists():
        return _dangling_reason(p)
    if p.suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES:
        return f"{p.suffix.lower()[1:].upper()} images are not supported: export the page as PNG, JPEG or PDF"
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a file"
        )
        return f"not a regular file ({kind})"
    return None


def scan_folder(root: Path) -> tuple[list[Path], list[BadInput]]:
    """Page files under `root` (recursive, sorted, symlinked folders followed once), and the
    entries with a page-like name that cannot be read (broken or looping links, FIFOs, SVGs)."""
    found: list[Path] = []
    bad: list[BadInput] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a link back up the tree: walked already
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in filenames + [
            d
            for d in dirnames
            if os.path.islink(os.path.join(dirpath, d)) and not os.path.exists(os.path.join(dirpath, d))
        ]:
            p = Path(dirpath) / name
            suffix = p.suffix.lower()
            if suffix not in INPUT_SUFFIXES and suffix not in UNSUPPORTED_IMAGE_SUFFIXES:
                continue
            problem = _not_a_page_file(p)
            if problem:
                bad.append(BadInput(str(p), problem))
            else:
                found.append(p)
    return sorted(found), sorted(bad, key=lambda b: b.path)


@dataclass(frozen=True)
class BadInput:
    """An input that cannot be read, and why (becomes a "bad" prediction row)."""

    path: str
    reason: str
