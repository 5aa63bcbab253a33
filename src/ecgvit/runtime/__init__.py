"""Inference only: reading inputs, the gate's assessing side, backends, the predictor, worker
processes, explanations and writers. Never imports `ecgvit.engine` (a test walks the imports)."""

from ecgvit.runtime.prediction import Prediction
from ecgvit.runtime.predictor import Predictor

__all__ = ["Prediction", "Predictor"]
