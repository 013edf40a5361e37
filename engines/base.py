"""The Engine protocol every backend implements (torch now; ONNX Runtime and TensorRT later).

``infer(clips)`` takes float32 ``[B, 3, T, H, W]`` clips normalised with ImageNet mean/std
and returns ``{"scores": [B, N, K] logits, "offsets": [B, N, 2]}`` as NumPy arrays, the same
for every backend, so the live spotter and offline inference never care which one runs.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from fgsl.config import FGSLConfig


class EngineError(ValueError):
    """An engine that cannot be opened or an input it cannot take (one clear message)."""


@runtime_checkable
class Engine(Protocol):
    cfg: FGSLConfig

    def infer(self, clips: np.ndarray) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


def check_clips(clips: np.ndarray, cfg: FGSLConfig) -> np.ndarray:
    """Validate and return ``clips`` as contiguous float32, or raise :class:`EngineError`."""
    if not isinstance(clips, np.ndarray):
        raise EngineError(f"clips must be a numpy array, got {type(clips).__name__}")
    want = (3, cfg.window_frames, cfg.image_size, cfg.image_size)
    if clips.ndim != 5 or clips.shape[1:] != want or clips.shape[0] < 1:
        raise EngineError(f"clips must be [B, {', '.join(map(str, want))}] with B >= 1, got {list(clips.shape)}")
    if clips.dtype != np.float32:
        raise EngineError(f"clips must be float32 (ImageNet-normalised), got {clips.dtype}")
    return np.ascontiguousarray(clips)
