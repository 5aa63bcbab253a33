"""One registry, timm-style: `create_model(name, num_classes=..., ...)` returns a plain nn.Module.

Each entry also says what input it expects (size, channels), so a model and its preprocessing
always travel together (ModelSpec.preprocess()).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

import torch
from torch import nn

from ecgvit.config import PreprocessConfig

__all__ = [
    "ModelSpec",
    "prepare_batch",
    "create_model",
    "list_models",
    "get_spec",
    "count_params",
    "count_gflops",
    "register_model",
]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    img_size: tuple[int, int]  # (H, W) the model is built for
    in_chans: int
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    trainable_here: bool = True  # False: too costly to train on a 2-core CPU (forward only)
    # Train (and teach) in channels-last memory layout: PyTorch's oneDNN convolutions run the
    # timm CNNs 1.3-1.8x faster so here (mobilenetv4_conv_small: training step 651 vs 977 ms,
    # forward 118 vs 212 ms, batch 32, 2 threads). ecgvit-tiny's thin stem gains less, ~5 % a
    # training step (benchmarks/train_step_bench.py).
    channels_last: bool = False
    # The teacher `ecgvit train --teacher auto` distils from, trained first on the same pages.
    default_teacher: str | None = None
    # What the model reads (PreprocessConfig.form): the page's pixels or the page reader's leads.
    form: str = "page"

    def preprocess(self, **overrides: Any) -> PreprocessConfig:
        h, w = self.img_size
        base: dict[str, Any] = dict(height=h, width=w, grayscale=self.in_chans == 1, form=self.form)
        base.update(overrides)
        return PreprocessConfig(**base)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (available: {', '.join(list_models())})") from None


def create_model(
    name: str,
    num_classes: int = 4,
    *,
    img_size: tuple[int, int] | None = None,
    in_chans: int | None = None,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model. `weights`: a local .safetensors file (never a hub download)."""
    spec = get_spec(name)
    kw = {**spec.kwargs, **kwargs}
    model = spec.builder(
        num_classes=num_classes, img_size=tuple(img_size or spec.img_size), in_chans=in_chans or spec.in_chans, **kw
    )
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: weights file not found")
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit this model ({str(exc).splitlines()[0]})") from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, img_size: tuple[int, int], in_chans: int) -> float:
    """Forward FLOPs per image in units of 1e9 (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, *img_size)
    with FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was_training)
    return fc.get_total_flops() / 1e9


# --- builders -------------------------------------------------------------------------------


def _timm(arch: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, img_size: tuple[int, int], in_chans: int, **kw: Any) -> nn.Module:
        import timm

        # pretrained=False always: weights come only from local files (--weights).
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)

    return build


def _seed(num_classes: int, img_size: tuple[int, int], in_chans: int, **kw: Any) -> nn.Module:
    from ecgvit.models.seed_vit import SeedViT

    return SeedViT(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **kw)


register_model(
    ModelSpec(
        "vit-seed",
        _seed,
        (182, 256),
        3,
        "the starting notebook's Keras ViT: 832 tokens x 512 dims, 8 blocks (forward cost only)",
        trainable_here=False,
    )
)
for _arch, _desc in (
    ("resnet18", "CNN baseline (timm resnet18)"),
    ("efficientnet_b0", "CNN baseline (timm efficientnet_b0)"),
    ("convnext_atto", "CNN baseline (timm convnext_atto)"),
    # A CNN of the default ViT's training cost here (~4 min per CV fold on 2 cores).
    ("mobilenetv4_conv_small", "CNN baseline (timm mobilenetv4_conv_small)"),
):
    # 192x320 grey grid crop, the ViT's input when these baselines were measured (MODEL_CARD.md;
    # the ViT alone scored 0.889 there against the best CNN's 0.863). Kept there: at 256x448
    # resnet18 trains at ~6 img/s here (a 5-fold CV would take hours); at the ViT's 288x320 the
    # CNNs are unmeasured.
    register_model(ModelSpec(_arch, _timm(_arch), (192, 320), 1, _desc, channels_last=True))


def _rowvit(num_classes: int, img_size: tuple[int, int], in_chans: int, **kw: Any) -> nn.Module:
    from ecgvit.models.ecg_vit import RowViT

    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}  # JSON round-trip
    return RowViT(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **kw)


register_model(
    ModelSpec(
        "ecgvit-tiny",
        _rowvit,
        # 288 rows ~ the grid area's height in the 1/4-scale draft decode, so a 1 mm grid square
        # spans ~1.9 pixel rows (192: ~1.2). 5-fold CV macro-F1, ViT alone, 90 epochs, the same
        # folds: 0.936 and 0.934 against 0.889 and 0.881 at 192x320 (MODEL_CARD.md).
        (288, 320),
        1,
        "the CPU ViT: conv stem, one token per (printed row, time step), 4 blocks x 128 dims",
        kwargs={"stem_chs": (16, 32, 64)},
        channels_last=True,
        # `--teacher auto`. At 192x320, distilled from it for 60 epochs, the ViT averaged 0.883
        # macro-F1 over three 5-fold CV runs, against 0.871 alone at 60 and 0.887 alone at 90
        # (MODEL_CARD.md); at 288x320 (the teacher trains at its student's input) unmeasured.
        default_teacher="mobilenetv4_conv_small",
    )
)

# A cheaper stem, tried for the <= 10 min/fold target: the 16-channel 144x160 stage (memory-
# bound: its GELU, BatchNorm and conv passes lead the step's profile) becomes a 4x4 patchify
# conv; the same stride 8 and tokens. ~0.81x the training step, ~0.75x the forward; 60 epochs
# scored 5-fold CV macro-F1 0.881 against ecgvit-tiny's 0.911 on the same folds (MODEL_CARD.md).
register_model(
    ModelSpec(
        "ecgvit-tiny-p4",
        _rowvit,
        (288, 320),
        1,
        "ecgvit-tiny with a 4x4 patchify first stage (stem 32/64): faster, lower CV score",
        kwargs={"stem_chs": (32, 64), "patch0": 4},
        channels_last=True,
    )
)


# The page-independent classifier: ecgvit-tiny on the page reader's twelve leads redrawn in one
# canonical 3x4+1 layout (`ecgvit.reader.canonical`), so any layout, grid and cart the reader
# reads is one input; its four image rows are the rowvit's four token rows.
register_model(
    ModelSpec(
        "ecgvit-tiny-leads",
        _rowvit,
        (288, 320),
        1,
        "ecgvit-tiny on the page reader's leads redrawn in one canonical layout: any layout and cart",
        kwargs={"stem_chs": (16, 32, 64)},
        channels_last=True,
        form="signals",
    )
)


def prepare_batch(arrays: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pages (N, H, W) or (N, H, W, 3) -> float (N, C, H, W) with ink high, paper ~0.

    Inverting makes the zero padding of augmentation and of convolutions look like paper.
    The arithmetic is `ecgvit.data.preprocess.model_input`'s (NumPy, which the ONNX path uses
    without torch), so training, export and both prediction backends see the same bits.
    """
    from ecgvit.data.preprocess import model_input

    if isinstance(arrays, torch.Tensor):
        arrays = arrays.cpu().numpy()
    return torch.from_numpy(model_input(arrays))


class WithFeatures(nn.Module):
    """Wraps a registry model so one forward pass returns (logits, pooled features).

    The gate (ecgvit.runtime.gate) scores the pooled features; exporting this wrapper gives an ONNX
    model with both outputs, so ONNX Runtime serves the gate too.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m: Any = self.model  # duck-typed: a timm model or one of ours, told apart below
        if hasattr(m, "forward_head") and hasattr(m, "get_classifier"):  # timm models
            f = m.forward_head(m.forward_features(x), pre_logits=True)
            return m.get_classifier()(f), f
        f = m.forward_features(x)  # RowViT, SeedViT: pooled features; head = last layer
        return m.head(f), f
