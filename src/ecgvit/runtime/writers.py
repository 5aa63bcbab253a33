"""Writing predictions as they come (CSV rows flushed per batch, JSON at the end) and the
summary and table `ecgvit predict` prints."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ecgvit.runtime.prediction import Prediction

__all__ = ["ResultWriter", "format_table", "summarize"]


class ResultWriter:
    """Results as they come: CSV rows appended and flushed per batch; JSON written at the end
    with a PATH.partial.jsonl beside it while running (kept if the run dies)."""

    def __init__(self, out: str | Path, classes: list[str], model: str = ""):
        self.out = Path(out)
        self.classes = classes
        self.model = model
        self.rows: list[dict[str, Any]] = []
        suffix = self.out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ValueError(f"--out {out}: expected a .csv or .json file")
        self.kind = suffix[1:]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "csv":
            self._f = open(self.out, "w", newline="")
            self._w = csv.writer(self._f)
            self._w.writerow(["path", "status", "label", "probability", *[f"p_{c}" for c in classes], "reason"])
            self._f.flush()
        else:
            self.partial = self.out.with_name(self.out.name + ".partial.jsonl")
            self._f = open(self.partial, "w")

    def write(self, preds: list[Prediction]) -> None:
        rows = [p.to_dict() for p in preds]
        self.rows.extend(rows)
        for r in rows:
            if self.kind == "csv":
                probs = r.get("probabilities") or {}
                self._w.writerow(
                    [
                        r["path"],
                        r["status"],
                        r.get("label") or "",
                        "" if r.get("probability") is None else f"{r['probability']:.6f}",
                        *["" if c not in probs else f"{probs[c]:.6f}" for c in self.classes],
                        r.get("reason", ""),
                    ]
                )
            else:
                self._f.write(json.dumps(r) + "\n")
        self._f.flush()

    def close(self, summary: dict[str, Any], complete: bool = True) -> None:
        self._f.close()
        if self.kind == "json":
            doc = {
                "model": self.model,
                "classes": self.classes,
                "complete": complete,
                "summary": summary,
                "predictions": self.rows,
            }
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            tmp.replace(self.out)
            self.partial.unlink(missing_ok=True)


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
