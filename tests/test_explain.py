"""Explanations: the method per architecture, maps in [0, 1] on the model input, drawn into the
crop box of the ORIGINAL page, with the label written on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ecgvit.cli import main
from ecgvit.runtime.explain import choose_method, heatmap
from ecgvit.runtime.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _seed_vit():
    from ecgvit.models.seed_vit import SeedViT

    return SeedViT(img_size=(28, 32), in_chans=1, embed_dim=32, depth=2, num_heads=2, mlp_dim=32).eval()


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 32, 4))

    def forward(self, x):
        return self.net(x)


def test_methods_by_architecture():
    import timm

    x = torch.rand(1, 1, 28, 32)
    torch.manual_seed(0)
    cases = [
        (_seed_vit(), "rollout"),
        (timm.create_model("resnet18", num_classes=4, in_chans=1), "gradcam"),
        (_MLP(), "gradxinput"),
    ]
    try:
        from ecgvit.models.ecg_vit import RowViT

        cases.append((RowViT(img_size=(64, 96), stem_chs=(8, 16, 16, 16), dim=32, depth=1, heads=2), "rollout"))
    except ImportError:
        pass
    for model, want in cases:
        model.eval()
        assert choose_method(model) == want
        m, used = heatmap(
            model, torch.rand(1, 1, *((64, 96) if type(model).__name__ == "RowViT" else (28, 32))), target=1
        )
        # an untrained CNN can have no positive Grad-CAM evidence: auto then falls back to grad x input
        assert used == want or (want == "gradcam" and used == "gradxinput")
        assert m.dtype == np.float32
        assert m.shape == ((64, 96) if type(model).__name__ == "RowViT" else (28, 32))
        assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    assert x.grad is None


def test_timm_attention_restored_after_rollout():
    model = _seed_vit()
    before = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    heatmap(model, torch.rand(1, 1, 28, 32), 0, "rollout")
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == before
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_method_and_rollout_without_attention():
    with pytest.raises(ValueError, match="method"):
        heatmap(_MLP(), torch.rand(1, 1, 28, 32), 0, "magic")
    with pytest.raises(ValueError, match="attention"):
        heatmap(_MLP(), torch.rand(1, 1, 28, 32), 0, "rollout")


@pytest.mark.parametrize("decoded_scale", [1.0, 0.5])
def test_render_overlay_maps_the_crop_into_original_coordinates(decoded_scale):
    from ecgvit.runtime.overlay import render_overlay

    full = (2000, 1000)
    page = Image.new(
        "RGB", (round(full[0] * decoded_scale), round(full[1] * decoded_scale)), "white"
    )  # e.g. a draft decode
    box = (200, 300, 1200, 900)  # original page pixels
    img = render_overlay(page, np.ones((8, 12), np.float32), box, full, "normal p=0.90", max_side=1000)
    assert img.size == (1000, 500)
    a = np.asarray(img).astype(int)
    coloured = (a.max(-1) - a.min(-1)) > 40
    assert coloured[155:445, 105:595].all()  # inside the box (scale 0.5): heat everywhere
    outside = coloured.copy()
    outside[:60, :] = False  # the label banner
    outside[145:455, 95:605] = False  # the box and its outline
    assert not outside.any()
    assert a[:20, :100].mean() < 120  # dark banner with the label


def test_explain_page_end_to_end(tiny_run, synth_pages, tmp_path):
    pred = Predictor(tiny_run, backend="torch")
    out = tmp_path / "heat.png"
    img, info = pred.explain(synth_pages[0], out=out, max_side=1000)
    assert out.exists() and Image.open(out).format == "PNG"
    page = Image.open(synth_pages[0]).convert("RGB")
    assert img.size == (1000, round(1000 * page.height / page.width))
    assert info["crop_box"] == pred.predict(synth_pages[0])[0].crop_box
    assert info["label"] in pred.classes and info["method"] in ("gradcam", "gradxinput")
    s = 1000 / page.width
    l, t, r, b = (round(v * s) for v in info["crop_box"])
    sat = np.asarray(img.convert("HSV"))[..., 1].astype(int) - np.asarray(page.resize(img.size).convert("HSV"))[
        ..., 1
    ].astype(int)
    assert sat[b + 3 :, :].mean() < 0.5 < sat[t + 3 : b - 3, l + 3 : r - 3].mean()  # heat only inside the crop


def test_cli_explain_and_predict_explain(tiny_run, synth_pages, synth_dir, tmp_path, capsys):
    out = tmp_path / "h.png"
    assert (
        main(
            [
                "explain",
                str(tiny_run),
                str(synth_pages[1]),
                "--out",
                str(out),
                "--max-side",
                "600",
                "--method",
                "gradxinput",
            ]
        )
        == 0
    )
    assert "gradxinput" in capsys.readouterr().out and Image.open(out).size[0] == 600
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    assert main(["explain", str(tiny_run), str(bad)]) == 2
    assert "not an image" in capsys.readouterr().err
    d = tmp_path / "heat"
    assert main(["predict", str(tiny_run), str(synth_dir), "--explain", str(d), "--quiet", "--backend", "torch"]) == 0
    assert len(list(d.glob("*.png"))) == 4


def test_default_vit_explained_by_attention_rollout(tmp_path, synth_pages, make_run):
    from ecgvit.config import DEFAULT_MODEL
    from ecgvit.models import list_models

    if DEFAULT_MODEL not in list_models():
        pytest.skip(f"default model {DEFAULT_MODEL!r} is not registered yet")
    run = make_run(tmp_path / "vit", model=DEFAULT_MODEL, size=None)
    pred = Predictor(run, backend="torch")
    img, info = pred.explain(synth_pages[2], max_side=800)
    assert info["method"] == "rollout" and img.size[0] == 800
    assert info["crop_box"] == pred.predict(synth_pages[2])[0].crop_box
