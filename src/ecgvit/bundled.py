"""The model shipped inside the package, so `ecgvit predict page.jpg` answers without training.

Made by scripts/train_bundled.py from the Khan & Hussain pages (see MODEL_CARD.md). Kept out of
ecgvit.models, which imports torch: `ecgvit predict` with the shipped ONNX model never needs it.
"""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED_NAME = "ecgvit-tiny-khan"


def bundled_dir() -> Path:
    return Path(__file__).resolve().parent / "weights" / BUNDLED_NAME


def bundled_run() -> Path | None:
    """The bundled run folder (config.json + model.safetensors), or None if not installed."""
    d = bundled_dir()
    return d if (d / "config.json").exists() and (d / "model.safetensors").exists() else None


def bundled_version() -> str | None:
    d = bundled_run()
    if d is None:
        return None
    meta = json.loads((d / "config.json").read_text())
    return f"{BUNDLED_NAME} (ecgvit {meta.get('ecgvit_version', '?')}, seed {meta.get('bundled', {}).get('seed', '?')})"
