"""Explanations: which part of the page drove the prediction, drawn on the original page.

    ecgvit explain RUN IMAGE --out heat.png [--method auto|rollout|gradcam|gradxinput]
    ecgvit predict RUN PATH... --explain DIR

Methods (auto picks the first that applies):
  rollout    ViTs: attention rollout (Abnar & Zuidema 2020), CLS-to-token attention multiplied
             through the blocks with the residual identity. Uses the model's own
             `attention_rollout` when it has one (ecgvit-tiny / RowViT); for timm-style attention
             modules (`fused_attn` + `attn_drop`) a forward hook on `attn_drop` captures the
             softmax output. Class-agnostic: it shows where the model looked.
  gradcam    CNNs: Grad-CAM (the `grad-cam` package) on the last convolutional stage, for the
             predicted class.
  gradxinput any model: |gradient x input| of the predicted class, Gaussian-smoothed.

The heatmap lives on the model input, i.e. the grid crop; it is resized into the crop box on
the original page (the box the preprocessing found, scaled from the draft-decoded copy to the
file's full size), blended over the page, and the label and probability are written on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from ecgvit.metrics import softmax
from ecgvit.models import prepare_batch
from ecgvit.runtime.overlay import explanation

if TYPE_CHECKING:
    from ecgvit.runtime.inputs import Loaded

__all__ = ["METHODS", "choose_method", "explain_loaded", "heatmap"]

METHODS = ("auto", "rollout", "gradcam", "gradxinput")


def _timm_attn_modules(model: nn.Module) -> list[nn.Module]:
    return [
        m for m in model.modules() if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module)
    ]


def choose_method(model: nn.Module) -> str:
    if callable(getattr(model, "attention_rollout", None)) or _timm_attn_modules(model):
        return "rollout"
    if any(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in model.modules()):
        return "gradcam"
    return "gradxinput"


# --- heatmaps on the model input ------------------------------------------------------------


def _rollout_matrices(attns: list[torch.Tensor]) -> torch.Tensor:
    rollout = None
    for a in attns:
        a = a.float().mean(1)  # heads averaged: (B, N, N)
        a = a + torch.eye(a.shape[-1])
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    assert rollout is not None
    return rollout


def _timm_rollout(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    mods: list[Any] = _timm_attn_modules(model)  # timm Attention modules (attn_drop, fused_attn)
    caught: list[torch.Tensor] = []
    hooks = [m.attn_drop.register_forward_hook(lambda _m, _i, o: caught.append(o.detach())) for m in mods]
    saved = [m.fused_attn for m in mods]
    try:
        for m in mods:
            m.fused_attn = False  # the explicit path: softmax(q k^T) goes through attn_drop
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, f in zip(mods, saved, strict=False):
            m.fused_attn = f
    if not caught:
        raise ValueError("no attention weights captured")
    r = _rollout_matrices(caught)[0]  # (N, N)
    pe = getattr(model, "patch_embed", None)
    grid = tuple(getattr(pe, "grid_size", ())) if pe is not None else ()
    n = r.shape[-1]
    if len(grid) != 2:
        side = int(round(np.sqrt(n)))
        grid = (side, n // side)
    prefix = n - grid[0] * grid[1]
    if prefix < 0:
        raise ValueError(f"cannot map {n} tokens onto a {grid} patch grid")
    # With a class token, its row says what the pooled feature attends to; with average pooling
    # (no class token) every token contributes, so average the rows.
    w = r[0, prefix:] if prefix > 0 else r.mean(0)
    return w.reshape(grid).numpy()


def _gradcam(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = _cam_layer(model)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        g = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    return np.asarray(g[0], dtype=np.float32)


def _cam_layer(model: nn.Module) -> nn.Module:
    """The last convolutional stage: resnet layer4, convnext stages, efficientnet head, else last conv."""
    for attr in ("layer4", "stages", "features"):
        m = getattr(model, attr, None)
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m):
            return m[-1]
    for attr in ("bn2", "conv_head"):  # timm efficientnet: conv_head -> bn2 (norm + act)
        m = getattr(model, attr, None)
        if isinstance(m, nn.Module) and hasattr(model, "conv_head"):
            return m
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional layer")
    return convs[-1]


def _grad_x_input(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        logits[0, target].backward()
    assert x.grad is not None  # backward() above filled it
    g = (x.grad * x).abs().sum(1)[0].detach().numpy()
    sigma = max(1.0, 0.015 * g.shape[1])
    return cv2.GaussianBlur(g.astype(np.float32), (0, 0), sigma)


def heatmap(model: nn.Module, x: torch.Tensor, target: int, method: str = "auto") -> tuple[np.ndarray, str]:
    """(H, W) map in [0, 1] over the model input x (1, C, H, W), and the method used."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    auto = method == "auto"
    if auto:
        method = choose_method(model)
    model.eval()
    h, w = x.shape[-2:]
    if method == "rollout":
        rollout = getattr(model, "attention_rollout", None)
        if callable(rollout):
            m = rollout(x)[0].detach().float().numpy()
        elif _timm_attn_modules(model):
            m = _timm_rollout(model, x)
        else:
            raise ValueError("rollout needs a model with attention (use gradcam or gradxinput)")
        # Drop the residual floor so the map shows where attention goes, not its uniform part.
        m = m - m.min()
    elif method == "gradcam":
        m = _gradcam(model, x, target)
    else:
        m = _grad_x_input(model, x, target)
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_CUBIC if min(m.shape) > 1 else cv2.INTER_LINEAR)
    m = np.clip(m, 0, None)
    top = float(m.max())
    if top <= 0 and auto and method == "gradcam":
        # Grad-CAM keeps only positive evidence; when there is none (all channels push the
        # class down, common for an untrained model) show gradient x input instead.
        return heatmap(model, x, target, "gradxinput")
    return (m / top if top > 0 else m), method


def explain_loaded(
    model: nn.Module,
    ld: Loaded,
    classes: list[str],
    method: str = "auto",
    max_side: int = 1600,
    target: int | None = None,
    title: str | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """Predict + heatmap + overlay for one preprocessed input (a `Loaded` kept with its .image).

    title: the text drawn on the image (default: label, probability and method)."""
    if ld.image is None:
        raise ValueError("explain needs the decoded page (load with keep_image=True)")
    x = prepare_batch(ld.array[None])
    with torch.no_grad():
        probs = softmax(model(x).float().numpy())[0]
    k = int(np.argmax(probs)) if target is None else int(target)
    heat, used = heatmap(model, x, k, method)
    return explanation(ld, probs, k, heat, used, classes, title, max_side)
