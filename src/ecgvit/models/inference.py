"""Running a registry model on preprocessed page arrays (training's validation, evaluation, CV)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ecgvit.metrics import softmax
from ecgvit.models import prepare_batch

__all__ = ["logits_of", "predict_proba"]


def logits_of(
    model: nn.Module, arrays: np.ndarray, batch_size: int = 64, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Logits (N, classes) for uint8 page arrays (N, H, W[, 3]), in eval mode, batch by batch."""
    was = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(arrays), batch_size):
            out.append(model(prepare_batch(arrays[i : i + batch_size]).to(device)).float().cpu().numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_proba(
    model: nn.Module,
    arrays: np.ndarray,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    temperature: float = 1.0,
) -> np.ndarray:
    """Softmax probabilities (of logits / temperature) for uint8 page arrays (N, H, W[, 3])."""
    logits = logits_of(model, arrays, batch_size, device)
    return softmax(logits, temperature) if len(logits) else logits
