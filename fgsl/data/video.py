"""Reading videos into model-ready clips (OpenCV), with clear errors for bad files.

Until the live face pipeline lands (issue #5), offline inference uses a fixed centre
square crop of each frame: right for webcam-style frontal recordings like the bundled
sample, wrong for faces away from the centre. Frames are resampled to the model's fps by
nearest source frame (``source = round(model_index * source_fps / model_fps)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fgsl.model import IMAGENET_MEAN, IMAGENET_STD


class VideoError(ValueError):
    """A video that cannot be read (the message names the file and the reason)."""


@dataclass
class Video:
    path: Path
    fps: float
    frames: np.ndarray  # [F, S, S, 3] RGB uint8 centre crops at the requested size

    @property
    def count(self) -> int:
        return len(self.frames)


def read_centre_crops(path: str | Path, size: int) -> Video:
    """All frames of ``path`` as centre-square RGB crops of ``size``×``size``."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open this file as a video")
        fps = cap.get(cv2.CAP_PROP_FPS)
        crops = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            h, w = frame.shape[:2]
            side = min(h, w)
            y, x = (h - side) // 2, (w - side) // 2
            crop = cv2.resize(frame[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
            crops.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not crops:
        raise VideoError(f"{path}: no decodable frames (corrupt or not a video)")
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"{path}: the file reports no frame rate")
    return Video(path, float(fps), np.stack(crops))


def resample_indices(count: int, source_fps: float, model_fps: float) -> np.ndarray:
    """Source frame index for each model frame covering ``count`` source frames."""
    n = max(1, int(np.floor((count - 1) * model_fps / source_fps)) + 1)
    return np.minimum(np.round(np.arange(n) * source_fps / model_fps).astype(int), count - 1)


def normalise(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W, 3]`` RGB uint8 -> ``[3, T, H, W]`` float32 with ImageNet mean/std."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))
