"""ecgvit: classify 12-lead ECG report pages with a Vision Transformer.

    from ecgvit import Predictor
    preds = Predictor().predict(["page.jpg"])

Names are imported on first use, so `import ecgvit` stays cheap and never imports torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ecgvit._version import __version__

# Nothing leaves the machine: ONNX Runtime otherwise queues a telemetry event per process. Set
# before any ecgvit module can import onnxruntime (every one of them imports this package first).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    from ecgvit.runtime.prediction import Prediction, to_dataframe
    from ecgvit.runtime.predictor import Predictor

__all__ = ["Prediction", "Predictor", "__version__", "to_dataframe"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from ecgvit.runtime.predictor import Predictor

        return Predictor
    if name == "Prediction":
        from ecgvit.runtime.prediction import Prediction

        return Prediction
    if name == "to_dataframe":
        from ecgvit.runtime.prediction import to_dataframe

        return to_dataframe
    raise AttributeError(f"module 'ecgvit' has no attribute {name!r}")
