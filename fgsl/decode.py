"""Raw FGSL outputs -> scored intervals (shared by offline inference and the live spotter).

Point layout: level ``l`` has ``L >> l`` points, each covering ``S_l = tubelet * 2**l``
frames of the window; point ``i`` sits at the centre of its frames,
``p = i * S_l + (S_l - 1) / 2`` (0-based frame index in the window). An interval is
``[p - o_start * S_l, p + o_end * S_l]`` (ActionFormer multiplies offsets by the stride the
same way). Candidates are every (point, class) whose sigmoid score passes
``min_score``; Gaussian soft-NMS (ActionFormer's default: class-aware, ``sigma`` 0.5) decays
overlapping candidates; the survivors above the score threshold are returned, best first.
The apex is the producing point's centre, clipped into the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import FGSLConfig


@dataclass(frozen=True)
class Interval:
    """One spotted interval, in frames of the window (0-based, inclusive), with the class
    index and score the network gave it: a decoded output, before
    :func:`fgsl.infer.to_detections` maps it to the video's frames and an emotion name (the
    rows :class:`fgsl.evaluate.MegcInterval` scores).
    """

    onset: float
    apex: float
    offset: float
    label: int
    score: float

    def shifted(self, frames: float) -> "Interval":
        return Interval(self.onset + frames, self.apex + frames, self.offset + frames, self.label, self.score)


def point_layout(cfg: FGSLConfig) -> tuple[np.ndarray, np.ndarray]:
    """(centres in window frames ``[N]``, stride in frames ``[N]``) for all pyramid levels."""
    centres, strides = [], []
    for length, stride in zip(cfg.level_lengths(), cfg.level_strides_frames()):
        centres.append(np.arange(length) * stride + (stride - 1) / 2)
        strides.append(np.full(length, stride, dtype=np.float64))
    return np.concatenate(centres), np.concatenate(strides)


def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one interval ``a [2]`` with many ``b [M, 2]`` on a continuous axis."""
    inter = np.clip(np.minimum(a[1], b[:, 1]) - np.maximum(a[0], b[:, 0]), 0, None)
    union = (a[1] - a[0]) + (b[:, 1] - b[:, 0]) - inter
    return inter / np.maximum(union, 1e-8)


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, sigma: float, min_score: float,
             limit: int) -> list[int]:
    """Class-aware Gaussian soft-NMS; returns kept indices, best first, decayed scores in place."""
    order: list[int] = []
    alive = np.ones(len(scores), dtype=bool)
    while alive.any() and len(order) < limit:
        best = int(np.argmax(np.where(alive, scores, -np.inf)))
        if scores[best] < min_score:
            break
        order.append(best)
        alive[best] = False
        same = alive & (labels == labels[best])
        if same.any():
            iou = temporal_iou(segments[best], segments[same])
            scores[same] *= np.exp(-(iou**2) / sigma)
    return order


def decode(
    outputs: dict[str, np.ndarray],
    cfg: FGSLConfig,
    *,
    threshold: float | None = None,
    min_score: float = 0.001,
    pre_nms_topk: int = 500,
) -> list[list[Interval]]:
    """``scores [B, N, K]`` logits + ``offsets [B, N, 2]`` -> intervals per batch item."""
    scores = np.asarray(outputs["scores"], dtype=np.float64)
    offsets = np.asarray(outputs["offsets"], dtype=np.float64)
    if scores.ndim != 3 or offsets.shape != scores.shape[:2] + (2,) or scores.shape[1] != cfg.num_points:
        raise ValueError(
            f"expected scores [B, {cfg.num_points}, {cfg.num_classes}] and offsets [B, {cfg.num_points}, 2], "
            f"got {list(scores.shape)} and {list(offsets.shape)}"
        )
    threshold = cfg.score_threshold if threshold is None else threshold
    centres, strides = point_layout(cfg)
    last = cfg.window_frames - 1
    results = []
    for logits, off in zip(scores, offsets):
        probs = 1.0 / (1.0 + np.exp(-logits))
        point, label = np.nonzero(probs > min_score)
        cand = probs[point, label]
        if len(cand) > pre_nms_topk:
            keep = np.argsort(-cand, kind="stable")[:pre_nms_topk]
            point, label, cand = point[keep], label[keep], cand[keep]
        start = np.clip(centres[point] - off[point, 0] * strides[point], 0, last)
        end = np.clip(centres[point] + off[point, 1] * strides[point], 0, last)
        segments = np.stack([start, end], 1)
        kept = soft_nms(segments, cand, label, cfg.nms_sigma, min_score, cfg.max_intervals)
        found = []
        for i in kept:
            if cand[i] < threshold or end[i] <= start[i]:
                continue
            apex = float(np.clip(centres[point[i]], start[i], end[i]))
            found.append(Interval(float(start[i]), apex, float(end[i]), int(label[i]), float(cand[i])))
        results.append(found)
    return results
