"""Projection transformer and 4-level temporal pyramid (ActionFormer style).

Facts from happyharrycn/actionformer_release (``libs/modeling/blocks.py``): a Conv1d
embedding with LayerNorm and ReLU, pre-LN transformer blocks with local (windowed) self
attention, and a pyramid where each level halves the previous one (max-pool with kernel 3,
stride 2). Our local attention uses a band mask instead of Longformer-style chunking: the
windows here are a few dozen tokens, and a mask exports to ONNX as plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def band_mask(length: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[L, L]`` mask, True where ``|i - j| <= window // 2`` (attention allowed)."""
    idx = torch.arange(length, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window // 2


class LocalTransformerBlock(nn.Module):
    """Pre-LN transformer block on ``[B, L, C]`` with windowed self attention."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(n, self.window, x.device))
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class PyramidNeck(nn.Module):
    """``[B, L, D_enc]`` -> list of ``[B, C, L >> l]`` for l = 0..levels-1."""

    def __init__(self, in_dim: int, dim: int, heads: int, layers: int, window: int, levels: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(in_dim, dim, 3, padding=1)
        self.embed_norm = nn.LayerNorm(dim)
        self.stem = nn.ModuleList(LocalTransformerBlock(dim, heads, window) for _ in range(layers))
        self.down = nn.ModuleList(LocalTransformerBlock(dim, heads, window) for _ in range(levels - 1))
        self.level_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(levels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(x.transpose(1, 2)).transpose(1, 2)
        x = F.relu(self.embed_norm(x))
        for block in self.stem:
            x = block(x)
        levels = [x]
        for block in self.down:
            pooled = F.max_pool1d(levels[-1].transpose(1, 2), 3, stride=2, padding=1).transpose(1, 2)
            levels.append(block(pooled))
        return [norm(level).transpose(1, 2) for norm, level in zip(self.level_norms, levels)]
