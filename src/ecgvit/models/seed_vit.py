"""`vit-seed`: the starting notebook's Keras ViT, rebuilt in PyTorch for comparison.

182x256 RGB input, 7x8 (h x w) patches -> 26x32 = 832 tokens of 512 dims, learned position
embedding, no class token, 8 pre-norm blocks (32 heads x 16 dims, MLP 2048 with ReLU),
LayerNorm + global average pool + linear head: about 25.7 M parameters. Too slow to train on a
2-core CPU (its forward pass alone is ~2 img/s); kept so its cost can be measured.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn


class SeedViT(nn.Module):
    def __init__(
        self,
        num_classes: int = 4,
        in_chans: int = 3,
        img_size: tuple[int, int] = (182, 256),
        patch_size: tuple[int, int] = (7, 8),
        embed_dim: int = 512,
        depth: int = 8,
        num_heads: int = 32,
        mlp_dim: int = 2048,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(
            img_size=img_size,
            # timm annotates patch_size as int but takes (h, w) too (to_2tuple, Conv2d kernel_size).
            patch_size=patch_size,  # type: ignore[arg-type]
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        n = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_dim / embed_dim,
                qkv_bias=True,
                act_layer=nn.ReLU,
                proj_drop=drop_rate,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.num_features = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
