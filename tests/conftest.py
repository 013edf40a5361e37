"""Shared fixtures: the tiny preset, seeded models and the real face videos in ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engines.selftest import randomise_adapters
from fgsl.config import preset
from fgsl.model import build

#: What the test modules import from here; ``randomise_adapters`` is the self-test's own loop
#: (a random network's IGA adapters made non-zero), not a copy of it.
__all__ = ["ROOT", "SAMPLE_VIDEO", "SHARED_DATA", "live_windows", "randomise_adapters", "real_face_clips",
           "real_face_frame_count", "shared_video", "track_faces", "TWO_CPU_RANKS"]

ROOT = Path(__file__).resolve().parents[1]

def _shared_data() -> Path:
    """``$FGSL_SHARED_DATA``, else ``../shared/data`` beside the checkout, else /work/shared/data."""
    if os.environ.get("FGSL_SHARED_DATA"):
        return Path(os.environ["FGSL_SHARED_DATA"])
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data()
SAMPLE_VIDEO = ROOT / "samples" / "pyfeat_single_face.mp4"

#: ``torchrun`` with two ranks on the CPU (gloo), GPUs hidden: on a one-GPU machine two ranks
#: would be refused (fgsl.train wants a GPU per rank), so these tests run the same everywhere.
TWO_CPU_RANKS = ("env", "CUDA_VISIBLE_DEVICES=", sys.executable, "-m", "torch.distributed.run",
                 "--nproc-per-node", "2", "--standalone")


@pytest.fixture(autouse=True)
def _engine_cache(tmp_path_factory, monkeypatch):
    """Engines built during tests go to a temporary cache, never to ~/.cache."""
    monkeypatch.setenv("FGSL_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine-cache"))


@pytest.fixture(autouse=True)
def _crop_cache(tmp_path_factory, monkeypatch):
    """Aligned crops go to a cache of each test's own (never ~/.cache): a test that aligns a
    video aligns it, whatever ran before it."""
    monkeypatch.setenv("FGSL_CROP_CACHE", str(tmp_path_factory.mktemp("crop-cache")))


@pytest.fixture
def tiny_cfg():
    """The tiny preset with one-chunk (16-frame) windows: the structure, at the least cost."""
    return preset("tiny", window_frames=16)


@pytest.fixture
def tiny_model(tiny_cfg):
    return build(tiny_cfg, seed=0)


def disk_full_when_replacing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``os.replace`` onto a file called ``name`` fail as a full disk does (ENOSPC): the
    last step of ``fgsl.files.atomic_write``, where a half-written file must not replace the
    old one. Every other ``os.replace`` still works."""
    import errno

    real = os.replace

    def replace(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def shared_video(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"test video {path} is missing: set FGSL_SHARED_DATA to the shared/data folder")
    return path


def track_faces(name: str | Path, count: int, max_faces: int, size: int):
    """Faces of the first ``count`` frames of a shared video (its name) or of a video file (a
    ``Path``), tracked and aligned at ``size`` px by the real face pipeline (MediaPipe): one
    list of ``FaceObservation`` per frame."""
    import time

    import cv2

    from realtime.face import FaceTracker
    from realtime.types import Frame

    cap = cv2.VideoCapture(str(name if isinstance(name, Path) else shared_video(name)))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out = []
    with FaceTracker(max_faces=max_faces, crop_size=size) as tracker:
        for i in range(count):
            ok, image = cap.read()
            assert ok, f"{name}: frame {i} unreadable"
            out.append(tracker.process(Frame(i, i / fps, time.monotonic(), image)).faces)
    cap.release()
    return out



def live_windows(faces, window: int, stride: int, fps: float, finish: bool = False):
    """The live buffers' windows of ``faces`` (one list of ``FaceObservation`` per frame, as
    :func:`track_faces` gives); ``finish`` adds each track's last window, as at end of stream."""
    from realtime.buffer import Buffers

    buffers = Buffers(window, stride, fps)
    out = [w for frame_faces in faces for w in buffers.push(frame_faces)]
    return out + (buffers.end_all() if finish else [])


def real_face_clips(cfg, starts):
    """Normalised windows ``[B, 3, T, S, S]`` of the bundled face video (centre crops at the
    config's size, resampled to its fps), one per start frame."""
    import numpy as np

    from fgsl.data.video import normalise, read_centre_crops, resample_indices

    video = read_centre_crops(shared_video("pyfeat_single_face.mp4"), cfg.image_size)
    frames = video.frames[resample_indices(video.count, video.fps, cfg.fps)]
    return np.stack([normalise(frames[s : s + cfg.window_frames]) for s in starts])


def real_face_frame_count(cfg) -> int:
    """Model frames of the bundled face video at the config's fps."""
    from fgsl.data.video import read_centre_crops, resample_indices

    video = read_centre_crops(shared_video("pyfeat_single_face.mp4"), cfg.image_size)
    return len(resample_indices(video.count, video.fps, cfg.fps))
