"""Reading videos into model-ready clips (OpenCV), with clear errors for bad files.

Offline inference and training use a fixed centre square crop of each frame (the synthetic
sets are fixed face crops too): right for face crops and webcam-style frontal recordings,
wrong for faces away from the centre. The live spotter (``realtime``) tracks and aligns
faces with MediaPipe instead; feeding its aligned crops to offline inference and training is
not done yet (it would change what trained weights expect). Frames are resampled to the model's fps by
nearest source frame (``source = round(model_index * source_fps / model_fps)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fgsl.config import IMAGENET_MEAN, IMAGENET_STD
from fgsl.data.frames import VideoError, open_source

__all__ = ["CROPS", "Video", "VideoError", "normalise", "read_centre_crops", "resample_indices"]

#: What this reader feeds a model, recorded with trained weights (``weights.info(...)["crops"]``)
#: so that the live spotter, which feeds MediaPipe-aligned crops, can say when they differ.
CROPS = "centre"


@dataclass
class Video:
    path: Path
    fps: float
    frames: np.ndarray  # [F, S, S, 3] RGB uint8 centre crops at the requested size

    @property
    def count(self) -> int:
        return len(self.frames)


def centre_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of a BGR frame, resized to ``size`` and turned RGB."""
    h, w = frame.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crop = cv2.resize(frame[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def read_centre_crops(path: str | Path, size: int, fps: float | None = None) -> Video:
    """All frames of a video file or numbered-frame folder as centre-square RGB crops.

    ``fps`` is required for a frame folder (the data set's rate) and overrides a file's.
    """
    source = open_source(path, fps)
    frames = [centre_crop(frame, size) for frame in source]
    if not frames:
        raise VideoError(f"{path}: no decodable frames (corrupt or not a video)")
    return Video(Path(path), source.fps, np.stack(frames))


def resample_indices(count: int, source_fps: float, model_fps: float) -> np.ndarray:
    """Source frame index for each model frame covering ``count`` source frames."""
    n = max(1, int(np.floor((count - 1) * model_fps / source_fps)) + 1)
    return np.minimum(np.round(np.arange(n) * source_fps / model_fps).astype(int), count - 1)


def normalise(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W, 3]`` RGB uint8 -> ``[3, T, H, W]`` float32 with ImageNet mean/std."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))
