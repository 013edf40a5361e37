"""Reading videos into model-ready clips (OpenCV), with clear errors for bad files.

Offline inference and training read a fixed centre square crop of each frame (the synthetic
sets are fixed face crops too): right for face crops and webcam-style frontal recordings,
wrong for faces away from the centre. The live spotter (``realtime``) tracks and aligns
faces with MediaPipe instead; weights trained on its framing (``fgsl.train --align-faces``)
are read that way offline too (``aligned=True`` in :func:`read_crops`, :mod:`fgsl.data.aligned`).

Frame rates: the annotation table and every output stay in source frames; the model runs at
``cfg.fps``. The one mapping between the two is :func:`to_model_frame` / :func:`to_source_frame`:
the nearest frame at the other rate, ties rounded half **up** (:func:`nearest_frame`). Python's
``round`` and ``np.round`` round half to even, which sends ties alternately down and up, so
SAMM (200 fps) frame 30, at 4.5 model frames, became model frame 4 while frame 10 (1.5)
became 2. Training targets (:func:`fgsl.data.spec.load_item`), the frames the model sees
(:func:`resample_indices`) and the detections written back in source frames
(:func:`fgsl.infer.to_detections`) all use this one rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fgsl.config import IMAGENET_MEAN, IMAGENET_STD, is_positive_number
from fgsl.data.frames import VideoError, open_source

__all__ = ["CROPS", "Video", "VideoError", "nearest_frame", "normalise", "pad_frames", "read_centre_crops",
           "read_crops", "resample_indices", "to_model_frame", "to_source_frame"]

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


def read_crops(path: str | Path, size: int, fps: float | None = None, *, aligned: bool = False,
               progress: bool = False, model_fps: float | None = None) -> Video:
    """All frames as ``size``-pixel RGB crops: MediaPipe-aligned crops of the video's face
    (``aligned``, :func:`fgsl.data.aligned.read_aligned_crops`, with a progress bar when
    ``progress``; only the frames a model at ``model_fps`` is shown are aligned), else centre
    squares (:func:`read_centre_crops`).

    A clip of a synthetic set made with ``--align`` is an aligned face crop already
    (:func:`fgsl.data.synthetic.made_aligned`): it is read as it is, which is how training
    on that set read it, not aligned a second time (which moved the picture by a mean 2.9-4.2
    grey levels on four such clips, docs/training.md)."""
    from fgsl.data.synthetic import made_aligned  # lazy: synthetic imports this module

    if aligned and not made_aligned(path):
        from fgsl.data.aligned import read_aligned_crops  # lazy: MediaPipe only for aligned crops

        return read_aligned_crops(path, size, fps, progress, model_fps)
    return read_centre_crops(path, size, fps)


def nearest_frame(position: float) -> int:
    """The frame nearest to a fractional frame ``position``, a tie going to the later frame
    (``floor(position + 0.5)``): unlike half-to-even rounding it is monotonic in ``position``
    and does not depend on whether the frame below is odd or even."""
    return math.floor(position + 0.5)


def to_model_frame(frame: float, source_fps: float, model_fps: float) -> int:
    """Source frame (0-based, may be fractional) -> the nearest model frame,
    ``nearest_frame(frame * model_fps / source_fps)``: SAMM 200 fps frame 10 -> 30 fps frame 2
    (1.5), frame 30 -> 5 (4.5). The product comes first, so an integer rate's tie is exact."""
    _check_rates(source_fps, model_fps)
    if frame < 0:
        raise ValueError(f"frame {frame} is negative")
    return nearest_frame(frame * model_fps / source_fps)


def to_source_frame(frame: float, source_fps: float, model_fps: float) -> int:
    """Model frame (may be fractional, as decoded intervals are) -> the nearest source frame,
    by the same rule. Not an exact inverse of :func:`to_model_frame` when the model rate is
    higher (then several model frames show one source frame); when it is lower or equal,
    ``to_model_frame(to_source_frame(m)) == m`` for every model frame ``m``."""
    return to_model_frame(frame, model_fps, source_fps)


def _check_rates(source_fps: float, model_fps: float) -> None:
    for name, fps in (("source_fps", source_fps), ("model_fps", model_fps)):
        if not is_positive_number(fps):
            raise ValueError(f"{name} must be a positive frame rate, got {fps}")


def resample_indices(count: int, source_fps: float, model_fps: float) -> np.ndarray:
    """Source frame index for each model frame covering ``count`` source frames: model frame
    ``i`` (at ``i / model_fps`` s) shows source frame :func:`to_source_frame` ``(i)``, within the video."""
    n = max(1, int(np.floor((count - 1) * model_fps / source_fps)) + 1)
    return np.array([min(to_source_frame(i, source_fps, model_fps), count - 1) for i in range(n)], dtype=int)


def pad_frames(frames: np.ndarray, length: int) -> np.ndarray:
    """``frames`` with its last frame repeated up to ``length`` frames (unchanged when already as
    long): how a video shorter than the model's window is shown to it, in inference and in
    training alike. A repeated frame adds no motion; black frames would add a cut, a sudden
    change the model could spot as a movement."""
    if len(frames) >= length:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), 0)])


def normalise(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W, 3]`` RGB uint8 -> ``[3, T, H, W]`` float32 with ImageNet mean/std."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))
