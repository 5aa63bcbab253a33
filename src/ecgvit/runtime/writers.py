"""Writing predictions as they come (CSV rows flushed per batch, JSON at the end) and the
summary and table `ecgvit predict` prints."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from ecgvit.data.io import split_page
from ecgvit.run import exclusive
from ecgvit.runtime.prediction import Prediction

__all__ = [
    "ResultWriter",
    "csv_row",
    "flat_row",
    "format_table",
    "input_md5",
    "summarize",
    "table_columns",
    "table_schema",
]


def input_md5(path: str) -> str:
    """md5 of the file an input names ("doc.pdf#page=2": the PDF's, with the page), or "" when
    it cannot be read: with the model digest, what identifies an answered input."""
    file, page = split_page(path)
    try:
        with open(file, "rb") as f:
            digest = hashlib.file_digest(f, "md5").hexdigest()
    except OSError:
        return ""
    return digest if page is None else f"{digest}#page={page}"


def table_columns(classes: list[str]) -> list[str]:
    """The CSV columns of a predictions table (Parquet adds crop_box, feature_distance, trace_rows, layout)."""
    return ["path", "status", "label", "probability", *[f"p_{c}" for c in classes], "reason", "md5", "model_sha256"]


def csv_row(r: dict[str, Any], classes: list[str], digest: str) -> list[str]:
    """A row as CSV fields: probabilities to 6 decimals, empty where there is none."""
    probs = r.get("probabilities") or {}
    return [
        r["path"],
        r["status"],
        r.get("label") or "",
        "" if r.get("probability") is None else f"{r['probability']:.6f}",
        *["" if c not in probs else f"{probs[c]:.6f}" for c in classes],
        r.get("reason", ""),
        r.get("md5", ""),
        digest,
    ]


def flat_row(r: dict[str, Any], classes: list[str], digest: str) -> dict[str, Any]:
    """A row as a table row: one column per class probability (Parquet, DataFrames)."""
    probs = r.get("probabilities") or {}
    d = {k: r.get(k) for k in ("path", "status", "label", "probability")}
    d.update({f"p_{c}": probs.get(c) for c in classes})
    d.update({"reason": r.get("reason", ""), "md5": r.get("md5", ""), "model_sha256": digest})
    d.update({k: r.get(k) for k in ("crop_box", "feature_distance", "trace_rows", "layout")})
    return d


def table_schema(classes: list[str]) -> Any:
    """The Parquet schema of `flat_row`s (pyarrow: the parquet extra)."""
    import pyarrow as pa

    text, number, count = pa.string(), pa.float64(), pa.int64()
    cols = [("path", text), ("status", text), ("label", text), ("probability", number)]
    cols += [(f"p_{c}", number) for c in classes] + [("reason", text), ("md5", text), ("model_sha256", text)]
    cols += [("crop_box", pa.list_(count)), ("feature_distance", number), ("trace_rows", count), ("layout", text)]
    return pa.schema(cols)


class ResultWriter:
    """Results as they come: CSV rows appended and flushed per batch; JSON written at the end
    with a PATH.partial.jsonl beside it while running (kept if the run dies).

    Every row records the md5 of its input and the digest of the model that answered, so a run
    that stopped can go on where it stopped: mode "auto" (default) resumes an existing `out`
    that holds rows of the same model and refuses one of another model; "resume" insists on
    going on; "overwrite" starts afresh. While a writer is open, `out` is locked (an advisory
    lock on OUT.lock): a second run with the same `out` is refused, never interleaved."""

    def __init__(
        self, out: str | Path, classes: list[str], model: str = "", model_digest: str = "", mode: str = "auto"
    ):
        if mode not in ("auto", "resume", "overwrite"):
            raise ValueError(f"mode={mode!r}: expected 'auto', 'resume' or 'overwrite'")
        self.out = Path(out)
        self.classes = classes
        self.model = model
        self.model_digest = model_digest
        suffix = self.out.suffix.lower()
        if suffix not in (".csv", ".json", ".parquet"):
            raise ValueError(f"--out {out}: expected a .csv, .json or .parquet file")
        self.kind = suffix[1:]
        if self.kind == "parquet":
            import pyarrow  # noqa: F401  (said now, not after the last page: the parquet extra)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = ExitStack()
        self._lock.enter_context(exclusive(str(self.out) + ".lock", f"--out {out}"))
        self._f: TextIO | None = None
        try:
            self.partial = self.out.with_name(self.out.name + ".partial.jsonl")
            self.rows: list[dict[str, Any]] = [] if mode == "overwrite" else self._previous_rows()
            self.resumed = len(self.rows)
            self._done = {(r["path"], r.get("md5", "")) for r in self.rows}
            self._rewrite()
        except BaseException:
            self._lock.close()
            raise

    def _rewrite(self) -> None:
        """The file (or the JSON/Parquet run's partial file) anew from `self.rows`: a line torn by
        a kill is dropped, not kept."""
        if self._f is not None:
            self._f.close()
        f = open(self.out, "w", newline="") if self.kind == "csv" else open(self.partial, "w")
        self._f = f
        if self.kind == "csv":
            self._w = csv.writer(f)
            self._w.writerow(table_columns(self.classes))
            for r in self.rows:
                self._w.writerow(csv_row(r, self.classes, self.model_digest))
        else:
            for r in self.rows:
                f.write(json.dumps({**r, "model_sha256": self.model_digest}) + "\n")
        f.flush()

    def forget(self, paths: set[str]) -> None:
        """Drop earlier rows of these inputs (their file changed: they are answered again)."""
        kept = [r for r in self.rows if r["path"] not in paths]
        if len(kept) < len(self.rows):
            self.rows = kept
            self._rewrite()

    def _previous_rows(self) -> list[dict[str, Any]]:
        """The rows an earlier run left in `out` (same model), or an error naming what differs."""
        rows: list[dict[str, Any]]
        if self.kind == "csv":
            if not self.out.exists() or self.out.stat().st_size == 0:
                return []
            with open(self.out, newline="") as f:
                text = f.read()
            if not text.endswith("\n"):  # the last line was cut by a kill, wherever it was cut
                text = text[: text.rfind("\n") + 1]
            reader = csv.reader(io.StringIO(text, newline=""))
            header = next(reader, [])
            lines = [line for line in reader if len(line) == len(header)]
            if header != table_columns(self.classes):
                raise ValueError(
                    f"--out {self.out} holds other columns than this model writes: pass --overwrite to replace it, or give another --out"
                )
            rows = [self._row_from_csv(dict(zip(header, line, strict=True))) for line in lines]
            digests = {line[-1] for line in lines}
        elif self.kind == "parquet" and self.out.exists():
            import pyarrow.parquet as pq

            try:
                flat = pq.read_table(self.out).to_pylist()
            except Exception:  # pyarrow's own errors for a file that is not Parquet
                raise ValueError(
                    f"--out {self.out} is not a Parquet predictions file: pass --overwrite to replace it, or give another --out"
                ) from None
            rows = [self._row_from_flat(f) for f in flat]
            digests = {str(f.get("model_sha256", "")) for f in flat}
        else:
            if self.kind == "json" and self.out.exists():
                try:
                    doc = json.loads(self.out.read_text())
                    rows = list(doc["predictions"])
                    digests = {str(doc.get("model_sha256", ""))}
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(
                        f"--out {self.out} is not a predictions file of ecgvit: pass --overwrite to replace it, or give another --out"
                    ) from None
            elif self.partial.exists():
                rows = []
                for line in self.partial.read_text().splitlines():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line torn by a kill: what follows it was never written
                digests = {str(r.get("model_sha256", "")) for r in rows}
            else:
                return []
            for r in rows:
                r.pop("model_sha256", None)
        if rows and digests != {self.model_digest}:
            raise ValueError(
                f"--out {self.out} holds predictions of another model: pass --overwrite to replace them, or give another --out"
            )
        return rows

    def _row_from_csv(self, line: dict[str, str]) -> dict[str, Any]:
        probs = {c: float(line[f"p_{c}"]) for c in self.classes if line[f"p_{c}"] != ""}
        return {
            "path": line["path"],
            "status": line["status"],
            "label": line["label"] or None,
            "probability": float(line["probability"]) if line["probability"] else None,
            "probabilities": probs or None,
            "reason": line["reason"],
            "md5": line["md5"],
        }

    def _row_from_flat(self, f: dict[str, Any]) -> dict[str, Any]:
        probs = {c: float(f[f"p_{c}"]) for c in self.classes if f.get(f"p_{c}") is not None}
        return {
            "path": f["path"],
            "status": f["status"],
            "label": f.get("label"),
            "probability": f.get("probability"),
            "probabilities": probs or None,
            "reason": f.get("reason") or "",
            "md5": f.get("md5") or "",
        }

    def answered(self, path: str, md5: str) -> bool:
        """Whether an earlier run already wrote this input's row (same file content, same model)."""
        return (path, md5) in self._done

    def write(self, preds: list[Prediction]) -> None:
        assert self._f is not None, "writer closed"
        f = self._f
        rows = []
        for p in preds:
            r = p.to_dict()
            r["md5"] = input_md5(p.path) if p.status != "bad" or Path(split_page(p.path)[0]).is_file() else ""
            rows.append(r)
        self.rows.extend(rows)
        for r in rows:
            if self.kind == "csv":
                self._w.writerow(csv_row(r, self.classes, self.model_digest))
            else:
                f.write(json.dumps({**r, "model_sha256": self.model_digest}) + "\n")
        f.flush()

    def close(self, summary: dict[str, Any], complete: bool = True) -> None:
        try:
            if self._f is not None:
                self._f.close()
                self._f = None
            if self.kind == "json":
                doc = {
                    "model": self.model,
                    "model_sha256": self.model_digest,
                    "classes": self.classes,
                    "complete": complete,
                    "summary": summary,
                    "predictions": self.rows,
                }
                tmp = self.out.with_name(f"{self.out.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(doc, indent=1) + "\n")
                tmp.replace(self.out)
                self.partial.unlink(missing_ok=True)
            elif self.kind == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pylist(
                    [flat_row(r, self.classes, self.model_digest) for r in self.rows], schema=table_schema(self.classes)
                )
                tmp = self.out.with_name(f"{self.out.name}.{os.getpid()}.tmp")
                pq.write_table(table, tmp)
                tmp.replace(self.out)
                self.partial.unlink(missing_ok=True)
        finally:
            self._lock.close()


def summarize(preds: list[Prediction], seconds: float) -> dict[str, Any]:
    rows = [p.to_dict() for p in preds]
    answered = [r for r in rows if r["status"] in ("ok", "low_confidence")]
    counts = Counter(r["status"] for r in rows)
    return {
        "images": len(rows),
        "ok": counts.get("ok", 0),
        "low_confidence": counts.get("low_confidence", 0),
        "out_of_scope": counts.get("out_of_scope", 0),
        "bad": counts.get("bad", 0),
        "labels": dict(Counter(r["label"] for r in answered)),
        "seconds": round(seconds, 3),
        "images_per_s": round((len(rows) - counts.get("bad", 0)) / seconds, 2) if seconds > 0 else None,
    }


def format_table(preds: list[Prediction], summary: dict[str, Any], limit: int = 20) -> str:
    rows = [p.to_dict() for p in preds]

    def short(p: str, n: int = 44) -> str:
        return p if len(p) <= n else "..." + p[-(n - 3) :]

    lines = [f"{'path':<46}{'label':<24}{'p':>6}  note"]
    for r in rows[:limit]:
        if r["status"] in ("ok", "low_confidence"):
            note = r.get("reason", "") if r["status"] == "ok" else f"LOW CONFIDENCE: {r.get('reason', '')}"
            lines.append(f"{short(r['path']):<46}{r['label']:<24}{r['probability']:>6.2f}  {note}")
        elif r["status"] == "out_of_scope":
            lines.append(f"{short(r['path']):<46}{'(out of scope)':<24}{'':>6}  {r['reason']}")
        else:
            lines.append(f"{short(r['path']):<46}{'(bad)':<24}{'':>6}  {r['reason']}")
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["labels"].items()))
    speed = f", {summary['images_per_s']:.1f} images/s" if summary.get("images_per_s") else ""
    lines.append(
        f"{summary['images']} inputs: {summary['ok'] + summary['low_confidence']} labelled ({counts or 'none'}; "
        f"{summary['low_confidence']} low confidence), {summary['out_of_scope']} out of scope, {summary['bad']} bad{speed}"
    )
    return "\n".join(lines)
