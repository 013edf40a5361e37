"""Training losses: sigmoid focal loss for classes, centre DIoU for offsets.

Facts from happyharrycn/actionformer_release (``libs/modeling/losses.py``,
``libs/modeling/meta_archs.py``):

* focal loss: ``BCE * (1 - p_t)**gamma * alpha_t`` with alpha 0.25, gamma 2, summed;
* DIoU on (start, end) distances from a point:
  ``1 - IoU + (rho / c)**2`` with ``rho = 0.5 * (r_p - l_p - r_g + l_g)`` and
  ``c = max(l_p, l_g) + max(r_p, r_g)``, summed over positive points;
* both divided by an EMA of the number of positive points (momentum 0.9);
* targets: a point is positive for a ground-truth interval when it lies inside the interval
  shrunk to ``radius * stride`` around its centre (centre sampling, radius 1.5) and the
  interval's largest distance from the point, in units of the level stride, falls in that
  level's regression range; among several, the shortest interval wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import FGSLConfig
from .decode import point_layout

#: Regression range per pyramid level, in points of that level (ActionFormer defaults).
REGRESSION_RANGES = ((0.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, float("inf")))


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Summed focal loss; ``targets`` are 0/1 floats of the logits' shape."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Summed 1-D DIoU loss of ``[M, 2]`` (start, end) distances, all >= 0."""
    lp, rp = pred[:, 0], pred[:, 1]
    lg, rg = target[:, 0], target[:, 1]
    inter = torch.min(lp, lg) + torch.min(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.max(lp, lg) + torch.max(rp, rg)
    rho = 0.5 * (rp - lp - rg + lg)
    return (1 - iou + (rho / enclosing.clamp(min=eps)) ** 2).sum()


@dataclass
class Targets:
    """Per point: class targets ``[B, N, K]`` (0/1), offsets ``[B, N, 2]``, positive mask ``[B, N]``."""

    classes: torch.Tensor
    offsets: torch.Tensor
    positive: torch.Tensor


def assign_targets(cfg: FGSLConfig, segments: list[torch.Tensor], labels: list[torch.Tensor], radius: float = 1.5) -> Targets:
    """Label every point of every window from its ground truth.

    ``segments[b]`` is ``[M, 2]`` (onset, offset) in window frames (inclusive), ``labels[b]``
    ``[M]`` class indices; windows without events pass empty tensors.
    """
    centres_np, strides_np = point_layout(cfg)
    centres = torch.as_tensor(centres_np, dtype=torch.float32)
    strides = torch.as_tensor(strides_np, dtype=torch.float32)
    lo = torch.cat([torch.full((n,), r[0]) for n, r in zip(cfg.level_lengths(), REGRESSION_RANGES)])
    hi = torch.cat([torch.full((n,), r[1]) for n, r in zip(cfg.level_lengths(), REGRESSION_RANGES)])
    n_points, k = len(centres), cfg.num_classes
    cls_t, off_t, pos_t = [], [], []
    for seg, lab in zip(segments, labels):
        cls = torch.zeros(n_points, k)
        off = torch.zeros(n_points, 2)
        if len(seg) == 0:
            cls_t.append(cls), off_t.append(off), pos_t.append(torch.zeros(n_points, dtype=torch.bool))
            continue
        seg = seg.float()
        left = centres[:, None] - seg[None, :, 0]  # [N, M]
        right = seg[None, :, 1] - centres[:, None]
        mid = 0.5 * (seg[:, 0] + seg[:, 1])
        reach = radius * strides[:, None]
        c_lo = torch.maximum(mid[None] - reach, seg[None, :, 0])
        c_hi = torch.minimum(mid[None] + reach, seg[None, :, 1])
        inside = (centres[:, None] >= c_lo) & (centres[:, None] <= c_hi)
        span = torch.maximum(left, right) / strides[:, None]
        in_range = (span >= lo[:, None]) & (span <= hi[:, None])
        length = (seg[:, 1] - seg[:, 0])[None].expand(n_points, -1).clone()
        length[~(inside & in_range)] = float("inf")
        best_len, best = length.min(1)
        positive = torch.isfinite(best_len)
        idx = torch.arange(n_points)
        cls[idx[positive], lab[best[positive]].long()] = 1.0
        off[positive] = torch.stack([left[idx, best], right[idx, best]], 1)[positive] / strides[positive, None]
        cls_t.append(cls), off_t.append(off), pos_t.append(positive)
    return Targets(torch.stack(cls_t), torch.stack(off_t), torch.stack(pos_t))


class FGSLLoss:
    """Focal + DIoU, normalised by an EMA of the positive count (ActionFormer)."""

    def __init__(self, init_normaliser: float = 100.0, momentum: float = 0.9, reg_weight: float = 1.0) -> None:
        self.normaliser = init_normaliser
        self.momentum = momentum
        self.reg_weight = reg_weight

    def __call__(self, outputs: dict[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
        positive = targets.positive.to(outputs["scores"].device)
        num_pos = int(positive.sum())
        self.normaliser = self.momentum * self.normaliser + (1 - self.momentum) * max(num_pos, 1)
        cls = sigmoid_focal_loss(outputs["scores"], targets.classes.to(outputs["scores"])) / self.normaliser
        if num_pos:
            reg = diou_loss_1d(outputs["offsets"][positive], targets.offsets.to(outputs["offsets"])[positive])
            reg = reg / self.normaliser
        else:
            reg = outputs["offsets"].sum() * 0.0
        return {"loss": cls + self.reg_weight * reg, "cls": cls.detach(), "reg": reg.detach()}
