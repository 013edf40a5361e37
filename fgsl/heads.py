"""Decoupled heads over every pyramid level (the paper's overview and FIFM figures; docs/model.md).

FIFM produces a classification and a spotting feature at full resolution L. Each pyramid
level ``l`` reads them average-pooled to its own length (``L >> l``) and added to its own
pyramid feature, so every level keeps its scale while sharing what FIFM exchanged.

Per level, as in the FIFM figure: the spotting branch runs a conv tower and a Conv1d that
regresses the distances to the start and end (``ReLU(scale_l * x)``, in units of the level
stride, ActionFormer's per-level ``Scale``); the spotting range of each point is
average-pooled over the tower's features (``(B, C, T) -> (B, C, 1)`` per point) and
concatenated into the classification branch before its tower and class Conv1d. Range
boundaries are taken from the detached, rounded offsets: the pooled features stay
differentiable, the integer boundaries do not need to be.

Head weights are shared across levels (ActionFormer); the class bias starts at the prior
``-log((1 - 0.01) / 0.01)`` so that early focal-loss training is stable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvTower(nn.Module):
    """``layers`` x (Conv1d k3 -> LayerNorm over channels -> ReLU) on ``[B, C, L]``."""

    def __init__(self, in_dim: int, dim: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim if i == 0 else dim, dim, 3, padding=1) for i in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x).transpose(1, 2)).transpose(1, 2))
        return x


def range_pool(features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Mean of ``features [B, C, L]`` over each point's spotted range.

    ``offsets [B, L, 2]`` are distances (in points) to the start and end; point ``i`` pools
    points ``j`` with ``i - round(start) <= j <= i + round(end)`` (always including ``i``).
    """
    length = features.shape[-1]
    idx = torch.arange(length, device=features.device, dtype=features.dtype)
    reach = torch.round(offsets.detach())
    lo = idx[None, :, None] - reach[..., 0:1]
    hi = idx[None, :, None] + reach[..., 1:2]
    mask = ((idx[None, None, :] >= lo) & (idx[None, None, :] <= hi)).to(features.dtype)  # [B, L, L]
    pooled = torch.bmm(mask, features.transpose(1, 2)) / mask.sum(-1, keepdim=True)
    return pooled.transpose(1, 2)


class DecoupledHeads(nn.Module):
    """(pyramid levels, FIFM cls, FIFM spot) -> ``scores [B, N, K]``, ``offsets [B, N, 2]``."""

    def __init__(self, dim: int, num_classes: int, layers: int, levels: int, prior: float = 0.01) -> None:
        super().__init__()
        self.spot_tower = ConvTower(dim, dim, layers - 1)
        self.offset_out = nn.Conv1d(dim, 2, 3, padding=1)
        self.cls_tower = ConvTower(2 * dim, dim, layers - 1)
        self.class_out = nn.Conv1d(dim, num_classes, 3, padding=1)
        nn.init.constant_(self.class_out.bias, -math.log((1 - prior) / prior))
        self.scales = nn.Parameter(torch.ones(levels))

    def forward(
        self, levels: list[torch.Tensor], cls: torch.Tensor, spot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores, offsets = [], []
        for level, feature in enumerate(levels):
            width = 1 << level
            spot_l = feature + (F.avg_pool1d(spot, width, width) if width > 1 else spot)
            cls_l = feature + (F.avg_pool1d(cls, width, width) if width > 1 else cls)
            spot_feat = self.spot_tower(spot_l)
            off = F.relu(self.scales[level] * self.offset_out(spot_feat)).transpose(1, 2)  # [B, L_l, 2]
            pooled = range_pool(spot_feat, off)
            logits = self.class_out(self.cls_tower(torch.cat([cls_l, pooled], 1))).transpose(1, 2)
            scores.append(logits)
            offsets.append(off)
        return torch.cat(scores, 1), torch.cat(offsets, 1)
