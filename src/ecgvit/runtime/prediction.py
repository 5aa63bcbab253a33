"""`Prediction`: one answer for one input, the same record for Python, CSV, JSON and HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANSWERED", "Prediction", "to_dataframe"]

# Statuses that carry a class label ("out_of_scope" and "bad" never do).
ANSWERED = ("ok", "low_confidence")


@dataclass
class Prediction:
    """What the model says about one input.

    status: "ok", "low_confidence" (answered, but less sure than usual), "out_of_scope" (not a
    page this model reads: no label) or "bad" (could not be read); `reason` says why when it is
    not "ok". probabilities are calibrated (temperature-scaled) when the model has a gate.
    """

    path: str
    status: str
    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    reason: str = ""
    crop_box: list[int] | None = None  # the crop on the original page (left, top, right, bottom)
    feature_distance: float | None = None  # to the nearest class mean of the training pages
    trace_rows: int | None = None  # rows of traces the gate counted on the page
    layout: str | None = None  # the layout the page reader found (models on the reader's leads)
    heatmap: str | None = None  # the explanation PNG, when one was written
    extra: dict[str, Any] = field(default_factory=dict)  # anything a caller adds (kept in to_dict)

    @classmethod
    def bad(cls, path: str, reason: str) -> Prediction:
        return cls(path=path, status="bad", reason=reason)

    @property
    def answered(self) -> bool:
        return self.status in ANSWERED

    def to_dict(self) -> dict[str, Any]:
        """The row every writer and the web API use; optional fields appear only when set."""
        d: dict[str, Any] = {
            "path": self.path,
            "status": self.status,
            "label": self.label,
            "probability": self.probability,
            "probabilities": self.probabilities,
            "reason": self.reason,
        }
        for k in ("crop_box", "feature_distance", "trace_rows", "layout", "heatmap"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        d.update(self.extra)
        return d


def to_dataframe(predictions: list[Prediction]) -> Any:
    """The predictions as a pandas DataFrame: one row each, one `p_<class>` column per class
    (pandas is optional: `pip install pandas`)."""
    import pandas as pd

    classes: list[str] = []
    for p in predictions:
        for c in p.probabilities or {}:
            if c not in classes:
                classes.append(c)
    rows = []
    for p in predictions:
        d = p.to_dict()
        probs = d.pop("probabilities") or {}
        d.update({f"p_{c}": probs.get(c) for c in classes})
        rows.append(d)
    return pd.DataFrame(rows)
