"""RowViT: a small CPU Vision Transformer laid out like a 12-lead ECG report page.

What it is
----------
A convolutional stem (a stack of strided 3x3 conv + BatchNorm + GELU, as in "Early
convolutions help transformers see better", Xiao et al. 2021) turns the grid area of a page
into a feature map at stride ``2**len(stem_chs)``. The map is cut into ``n_rows`` horizontal
bands -- one per printed row of traces (a Khan page prints 3 rows of 4 lead panels and a
lead-II rhythm strip, i.e. 4 rows of equal height) -- and every column of a band (all its
feature rows, flattened together with the channels) is projected to one token. Tokens are
therefore "time step t of printed row r": ``n_rows x (W / stride)`` of them, with separate
learned row and time position embeddings (plus a learned embedding per lead panel, the
cell of a ``n_rows x panel_cols`` grid the token falls in). A CLS token and a plain pre-norm
transformer encoder follow; the CLS output is the pooled feature.

Why
---
Trained from scratch on a few hundred pages, a plain patch ViT stays at chance: square
16-px patches cut traces at arbitrary heights and the model has no inductive bias to find
them. Layout-aware tokens (one token = a short time slice of one printed row) let attention
work along time within a lead and across leads at the same instant, and the conv stem gives
the locality/translation bias that thin 1-2 px traces need. The stem is kept thin so the
whole model is ~0.26 GFLOP at 192x320 (0.61 M parameters with the defaults); ``ecgvit-tiny``
builds it at 288x320 (0.31 GFLOP, 0.64 M: each token's band has 9 feature rows instead of 6).

Input
-----
Float tensor (B, in_chans, H, W): the grid-area crop (``ecgvit.data.preprocess``) as uint8,
converted by :func:`ecgvit.models.prepare_batch` to ``x = 1 - u8 / 255`` (ink is high, paper
~0). There is no further mean/std normalisation: the first convolution has no bias and is
followed by BatchNorm, which absorbs any affine rescaling of the input (training, export and
prediction all use prepare_batch). H must be divisible by ``n_rows * stride`` and W by
``stride`` (default 192x320, stride 8 -> 4 rows x 40 time steps = 160 tokens, each token
a 6-feature-row x 8-px (~0.125 s) slice of one printed row).

Training recipe and what it measured (Khan pages, 418 distinct, StratifiedKFold(5, shuffle,
random_state=0) on distinct pages, last epoch, no selection on the scored fold)
-----------------------------------------------------------------------------------------
192x320 gray crop, AdamW lr 1e-3 (wd 0.05 on weights, 0 on norms/biases/embeddings), batch 32,
2 warm-up epochs then cosine to 0, grad-clip 1.0, label smoothing 0.1, class-balanced sampling
with replacement, batch augmentation in torch (affine: scale 0.93-1.07 per axis, rotation
+-1 deg, shift +-4 % x / +-3 % y, zero = paper fill; blur p=0.3; gamma 0.7-1.4; contrast
0.8-1.2; brightness +-0.03; gaussian noise sd <= 0.04; no flips).
  20 epochs, 5 folds: macro-F1 0.554 +- 0.039, accuracy 0.713 +- 0.049 (MI recall 0.12).
  40 epochs, fold 0 only: macro-F1 0.734, accuracy 0.881 (vs 0.618 / 0.774 at 20 epochs).
~5.5 s/epoch on 2 idle cores; ~210 img/s inference at batch 32 on 2 cores.

Attention maps
--------------
``model.set_store_attention(True)`` makes every block keep its last attention weights
(B, heads, N, N) in ``block.attn.last_attn`` (slower path, for explanation only);
:meth:`RowViT.attention_rollout` returns the CLS-to-token rollout reshaped to
(B, n_rows, T) (token grid) for overlaying on the page.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        assert dim % heads == 0, "dim must be divisible by heads"
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = Dropout(proj_drop)
        self.store_attention = False
        self.last_attn: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.store_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            self.last_attn = attn.detach()
            attn = F.dropout(attn, self.attn_drop, self.training)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class Dropout(nn.Dropout):
    """`nn.Dropout` with a cheaper mask: each element kept with probability 1 - p and scaled
    by 1 / (1 - p), as in torch, with p rounded to a multiple of 2**-15 (0.1 -> 0.100006).

    On the CPU, drawing the mask was ~12 % of a training step with `bernoulli_` (what
    `nn.Dropout` uses) and about half that with one `torch.rand` float per element. One int32
    draw holds 31 random bits (`random_` draws in [0, 2**31)), so it is split into two 15-bit
    lanes: half the draws again. A subclass, so checkpoints and exports are unchanged (no
    parameters; identity in eval).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        drop_below = round(self.p * 32768)  # keep iff a uniform 15-bit lane >= this
        n = x.numel()
        draws = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_()
        lanes = draws.view(torch.int16)[:n].view(x.shape) & 0x7FFF  # bit 31 is always 0: 2 x 15 bits
        return torch.where(lanes >= drop_below, x * (32768.0 / (32768 - drop_below)), 0.0)


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), Dropout(drop), nn.Linear(hidden, dim), Dropout(drop)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def conv_bn_gelu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class RowViT(nn.Module):
    """Conv-stem ViT whose tokens are (printed row, time step) cells of an ECG report page.

    Args:
        num_classes: output classes.
        in_chans: input channels (1 for the grayscale crops).
        img_size: (H, W) of the input; H % (n_rows * stride) == 0 and W % stride == 0.
        stem_chs: output channels of the stem stages; the first is a 3x3 stride-2 conv
            (patch0=2) or a non-overlapping patch0 x patch0 conv, every later one a 3x3 stride-2
            conv; stride = patch0 * 2 ** (len(stem_chs) - 1).
        patch0: stride of the first stem stage (2: 3x3 conv; 4: 4x4 patchify conv, cheaper).
        dim: token width.
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        n_rows: printed rows of traces on the page (4 on the Khan template).
        panel_cols: lead panels per printed row, for the per-panel embedding (4 on the Khan
            template; 0 disables it).
        drop: dropout in MLP / projections and before the head.
        drop_path: stochastic depth rate of the last block (linear from 0).
    """

    def __init__(
        self,
        num_classes: int = 4,
        in_chans: int = 1,
        img_size: tuple[int, int] = (192, 320),
        stem_chs: tuple[int, ...] = (16, 32, 64),
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        patch0: int = 2,
        n_rows: int = 4,
        panel_cols: int = 4,
        drop: float = 0.1,
        drop_path: float = 0.1,
    ):
        super().__init__()
        H, W = img_size
        self.stride = patch0 * 2 ** (len(stem_chs) - 1)
        if H % (n_rows * self.stride) or W % self.stride:
            raise ValueError(f"img_size {img_size}: H must divide by {n_rows * self.stride}, W by {self.stride}")
        self.img_size = (H, W)
        self.n_rows = n_rows
        self.band_h = H // self.stride // n_rows  # feature rows per printed row
        self.n_time = W // self.stride
        self.num_classes = num_classes
        self.num_features = dim

        chs = (in_chans, *stem_chs)
        first = (
            conv_bn_gelu(in_chans, stem_chs[0], 2)
            if patch0 == 2
            else nn.Sequential(
                nn.Conv2d(in_chans, stem_chs[0], patch0, patch0, bias=False), nn.BatchNorm2d(stem_chs[0]), nn.GELU()
            )
        )
        self.stem = nn.Sequential(first, *[conv_bn_gelu(chs[i], chs[i + 1], 2) for i in range(1, len(stem_chs))])
        self.token_proj = nn.Linear(stem_chs[-1] * self.band_h, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.row_embed = nn.Parameter(torch.zeros(1, n_rows, 1, dim))
        self.time_embed = nn.Parameter(torch.zeros(1, 1, self.n_time, dim))
        if panel_cols > 0:
            col = (torch.arange(self.n_time) * panel_cols) // self.n_time
            panel = torch.arange(n_rows)[:, None] * panel_cols + col[None, :]
            self.register_buffer("panel_index", panel.reshape(-1), persistent=False)
            self.panel_embed: nn.Embedding | None = nn.Embedding(n_rows * panel_cols, dim)
        else:
            self.panel_embed = None
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, drop, dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head_drop = Dropout(drop)
        self.head = nn.Linear(dim, num_classes)
        self._init()

    def _init(self) -> None:
        for t in (self.cls_token, self.row_embed, self.time_embed):
            nn.init.trunc_normal_(t, std=0.02)
        if self.panel_embed is not None:
            nn.init.trunc_normal_(self.panel_embed.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _attentions(self) -> list[Attention]:
        """Each block's attention module (`blocks` holds only `Block`s)."""
        return [cast(Block, b).attn for b in self.blocks]

    def set_store_attention(self, on: bool = True) -> None:
        for attn in self._attentions():
            attn.store_attention = on
            if not on:
                attn.last_attn = None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> row/time tokens (B, n_rows * T, dim) with position embeddings."""
        f = self.stem(x)  # (B, C', n_rows * band_h, T)
        B, C, _, T = f.shape
        f = (
            f.reshape(B, C, self.n_rows, self.band_h, T)
            .permute(0, 2, 4, 1, 3)
            .reshape(B, self.n_rows, T, C * self.band_h)
        )
        t = self.token_proj(f) + self.row_embed + self.time_embed  # (B, R, T, D)
        t = t.reshape(B, self.n_rows * T, -1)
        if self.panel_embed is not None:
            t = t + self.panel_embed(self.panel_index)[None]
        return t

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))

    @torch.no_grad()
    def attention_rollout(self, x: torch.Tensor, discard_ratio: float = 0.0) -> torch.Tensor:
        """Attention rollout (Abnar & Zuidema 2020) from CLS to the tokens: (B, n_rows, T)."""
        was_training = self.training
        self.eval()
        self.set_store_attention(True)
        try:
            self.forward(x)
            rollout: torch.Tensor | None = None
            for attn in self._attentions():
                assert attn.last_attn is not None, "forward ran with store_attention on"
                a = attn.last_attn.mean(1)  # (B, N, N), heads averaged
                if discard_ratio > 0:
                    flat = a.flatten(1)
                    k = int(flat.shape[1] * discard_ratio)
                    idx = flat.topk(k, dim=1, largest=False).indices
                    flat.scatter_(1, idx, 0)
                    a = flat.view_as(a)
                a = a + torch.eye(a.shape[-1], device=a.device)
                a = a / a.sum(-1, keepdim=True)
                rollout = a if rollout is None else a @ rollout
            if rollout is None:
                raise ValueError("attention rollout needs at least one block (depth >= 1)")
            cls = rollout[:, 0, 1:]
            cls = cls / cls.amax(1, keepdim=True).clamp_min(1e-12)
            return cls.reshape(x.shape[0], self.n_rows, self.n_time)
        finally:
            self.set_store_attention(False)
            self.train(was_training)
