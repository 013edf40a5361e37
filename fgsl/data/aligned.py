"""Whole videos read as the live spotter frames faces: MediaPipe-aligned crops, for offline use.

Why: weights trained for the live spotter (``fgsl.train --align-faces``, marked
``"crops": "aligned"``) learned MediaPipe-aligned crops (eyes and nose on fixed positions,
:mod:`realtime.face`). Offline inference (``fgsl.infer``), threshold tuning (``fgsl.tune``)
and training on annotated videos must feed them that framing too, or the weights see another
picture than the one they learned; a centre crop also cuts off a face away from the frame's
centre. Everything here runs the live spotter's own tracker, so the framing is the same by
construction: the tracker's crop is :func:`tracker_crop_size` pixels and is shrunk to the
model's size with :func:`fit_crops`, exactly as the live FGSL spotter does
(``realtime.spotters.fgsl.model_crops``).

Which face: a video read for offline use stands for one subject (a MEGC CSV has one set of
rows per video). The face followed is the largest in the first frame that shows one; after
that, in each frame, the face nearest the followed one's last position (within half its box
side, :func:`nearest_face`), so a face the tracker loses and finds again under a new track id
is still followed, and a person passing by is not taken for it. After
:data:`REACQUIRE_AFTER` frames without it, the largest face in view is followed again (the
subject sat down elsewhere). A frame without the followed face repeats the aligned frame
before it (at the start, the first one found), and a warning says how many frames that was.
``realtime.cam`` spots every face of a multi-face video. (``fgsl.data.synthetic
--align`` follows its own rule, the face nearest each source's fixed Haar box, with the same
:func:`nearest_face`: its subjects are found before tracking.)

MediaPipe makes aligning the slow part of reading (12 ms a frame against 1.3 ms for centre
crops on 2 cores here, docs/training.md), so only the frames the model is shown are aligned
(``model_fps``, :func:`model_frames`), ``progress`` shows a bar, and the crops are kept on
disk (:mod:`fgsl.data.crop_cache`), so each video is aligned once.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
import numpy as np
from tqdm import tqdm

from fgsl.data import crop_cache
from fgsl.data.crop_cache import CachedCrops, entry_for
from fgsl.data.frames import FrameSource, VideoError, open_source
from fgsl.data.synthetic import Recipe
from fgsl.data.video import Video

if TYPE_CHECKING:
    from realtime.types import FaceObservation

__all__ = ["ALIGNED", "ALIGNED_CROP", "REACQUIRE_AFTER", "align_source", "aligned_faces", "fill_gaps", "fill_index",
           "fit_crops", "largest_face", "model_frames", "nearest_face", "read_aligned_crops", "tracker_crop_size"]

#: The ``"crops"`` record of weights trained on these crops (``weights.info``); ``fgsl.data.video.CROPS``
#: (``"centre"``) is the other.
ALIGNED = "aligned"

#: The smallest aligned crop the tracker makes for a model (px); :func:`fit_crops` shrinks it
#: to the model's ``image_size`` with ``INTER_AREA``. The tracker's ``warpAffine`` samples
#: bilinearly, which aliases when it shrinks a face of a few hundred pixels straight to the
#: tiny preset's 32; and the aligned training sets (``fgsl.data.synthetic --align``) are
#: aligned at this size (the generator's crop) and shrunk the same way when read (live F1
#: 0.624 -> 0.680, docs/realtime.md).
ALIGNED_CROP = Recipe.size


def tracker_crop_size(size: int) -> int:
    """The tracker's crop for a model taking ``size`` pixels: :data:`ALIGNED_CROP`, or the
    model's own size when larger (never enlarged from fewer pixels)."""
    return max(size, ALIGNED_CROP)


def fit_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """``[T, s, s, 3]`` crops at ``size`` pixels: shrunk with ``INTER_AREA`` (it averages the
    pixels a bilinear shrink would skip, so fine motion is not aliased), enlarged bilinearly."""
    if crops.shape[1:3] == (size, size):
        return crops
    interp = cv2.INTER_AREA if crops.shape[1] * crops.shape[2] > size * size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


def box_centre(box: Sequence[float]) -> np.ndarray:
    """The centre ``(x, y)`` of an ``(x0, y0, x1, y1)`` box."""
    return np.array([box[0] + box[2], box[1] + box[3]], np.float64) / 2


def nearest_face(faces: Iterable[FaceObservation], centre: np.ndarray, reach: float) -> FaceObservation | None:
    """The face whose box centre is nearest ``centre`` (largest coordinate difference),
    if nearer than ``reach`` pixels; else ``None`` (the face looked for is not in view)."""
    best, gap = None, reach
    for face in faces:
        distance = float(np.abs(box_centre(face.box) - centre).max())
        if distance < gap:
            best, gap = face, distance
    return best


def model_frames(source_fps: float, model_fps: float | None) -> Iterator[bool]:
    """For each source frame in turn, whether a model at ``model_fps`` shows it: source frame
    ``i`` is shown when it is :func:`fgsl.data.video.to_source_frame` of some model frame (the
    rule of :func:`fgsl.data.video.resample_indices`). Every frame when ``model_fps`` is
    ``None`` or not below the source's rate."""
    from fgsl.data.video import to_source_frame

    if model_fps is None or model_fps >= source_fps:
        while True:
            yield True
    i, shown, model = 0, 0, 0
    while True:
        while shown < i:
            model += 1
            shown = to_source_frame(model, source_fps, model_fps)
        yield shown == i
        i += 1


def aligned_faces(source: FrameSource, crop_size: int, progress: bool = False, desc: str | None = None,
                  model_fps: float | None = None) -> Iterator[list[FaceObservation] | None]:
    """The faces the live spotter's tracker sees in each frame of ``source``, with
    ``crop_size`` aligned crops (RGB). With ``model_fps`` below the source's rate, only the
    frames a model at that rate is shown are tracked (:func:`model_frames`), the others are
    ``None``: a 200 fps SAMM video is tracked at about 30 fps, as a live camera's frames
    are, in a sixth of the time. A tracker that cannot start (no MediaPipe, no libEGL, a
    damaged face model) raises ``realtime.types.RealtimeError``, which says which."""
    from realtime.face import FaceTracker  # lazy: MediaPipe only where aligned crops are read
    from realtime.types import Frame

    with FaceTracker(crop_size=crop_size) as tracker:
        bar = tqdm(source, desc=desc or f"aligning {source.path.name}", unit="frame",
                   total=source.estimated_count() if progress else None, disable=not progress, file=sys.stderr,
                   leave=False)
        for i, (frame, shown) in enumerate(zip(bar, model_frames(source.fps, model_fps))):
            yield tracker.process(Frame(i, i / source.fps, time.monotonic(), frame)).faces if shown else None


def fill_index(present: Sequence[bool]) -> np.ndarray:
    """For each position, which of the present items fills it: its own (counted among the
    present ones), else the nearest present one before it, or at the start the first one.
    At least one must be present."""
    rank = np.cumsum(present) - 1
    return np.maximum(rank, 0)


def fill_gaps(crops: list[np.ndarray | None]) -> np.ndarray:
    """The crops with each missing one (``None``) replaced by the nearest crop before it, or
    at the start by the first one present (:func:`fill_index`). At least one must be present."""
    present = [c for c in crops if c is not None]
    return np.stack(present)[fill_index([c is not None for c in crops])]


#: Frames without the followed face after which :func:`read_aligned_crops` follows the
#: largest face in view instead (the tracker ends a track after 1/3 s, 10 frames at 30 fps).
REACQUIRE_AFTER = 10


def largest_face(faces: Iterable[FaceObservation]) -> FaceObservation | None:
    """The face with the largest box, ``None`` when there is none."""
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), default=None)


def read_aligned_crops(path: str | Path, size: int, fps: float | None = None, progress: bool = False,
                       model_fps: float | None = None, cache: bool = True) -> Video:
    """All frames of a video file or numbered-frame folder as ``size``-pixel RGB crops of its
    face, aligned by the live spotter's tracker (see the module docstring for which face and
    for frames without it). ``fps`` as :func:`fgsl.data.video.read_centre_crops`. With
    ``model_fps`` (the model's rate) only the frames that model is shown are aligned
    (:func:`aligned_faces`); each other frame repeats the aligned frame before it, and the
    model, which reads :func:`fgsl.data.video.resample_indices`, never sees them.

    With ``cache`` the crops are kept on disk (:mod:`fgsl.data.crop_cache`), so a video is
    aligned once: a later reading of the same video, unchanged, for the same model loads
    them, and says the first reading's warnings again."""
    source = open_source(path, fps)
    entry = entry_for(source, size, model_fps) if cache and crop_cache.enabled() else None
    read = entry.load() if entry is not None else None
    if read is None:
        read = align_source(source, size, progress, model_fps)
        if entry is not None:
            entry.store(read)
    for message in read.said:
        warnings.warn(f"{path}: {message}", stacklevel=2)
    return Video(Path(path), source.fps, read.crops[read.index])


def align_source(source: FrameSource, size: int, progress: bool = False,
                 model_fps: float | None = None) -> CachedCrops:
    """:func:`read_aligned_crops` without the cache: the distinct aligned crops (each is shrunk
    as it comes, so memory holds model-sized frames only), which one each frame shows, and
    what the reading has to say: its own findings, and the warnings that name the video
    (decoding that stopped short, :func:`fgsl.data.frames.cut_short`), which a cached
    reading says again."""
    said: list[str] = []
    try:
        with _warnings_about(source.path, said):
            crops, shown, missing, most = _follow_face(source, size, progress, model_fps)
        if not crops:
            raise VideoError(f"{source.path}: no decodable frames (corrupt or not a video)")
        if missing == shown:
            raise VideoError(f"{source.path}: MediaPipe found no face to align in the {shown} frames read")
    except BaseException:
        for message in said:  # (a cut-off file, then no face in what it held: both are said)
            warnings.warn(f"{source.path}: {message}", stacklevel=2)
        raise
    if missing:
        said.append(f"the face is not found in {missing} of the {shown} frames read; each repeats the aligned frame "
                    "before it")
    if most > 1:
        said.append(f"up to {most} faces in view; reading the largest at the start (offline reading spots one face "
                    "per video; realtime.cam spots each)")
    present = [c for c in crops if c is not None]
    return CachedCrops(np.stack(present), fill_index([c is not None for c in crops]), tuple(said))


@contextmanager
def _warnings_about(path: Path, kept: list[str]) -> Iterator[None]:
    """Within the block, each warning that names ``path`` is kept in ``kept`` (without the
    name) instead of shown; every other warning is shown as it would have been. Done by
    wrapping ``warnings.showwarning``, not with ``catch_warnings``, whose filter reset would
    show a library's once-per-process warnings again for every video."""
    prefix = f"{path}: "
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if str(message).startswith(prefix):
            kept.append(str(message).removeprefix(prefix))
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _follow_face(source: FrameSource, size: int, progress: bool,
                 model_fps: float | None) -> tuple[list[np.ndarray | None], int, int, int]:
    """The followed face's crop in each frame (``None``: not shown to the model, or not in
    view), with the frames tracked, those without the face and the most faces seen at once."""
    crops: list[np.ndarray | None] = []
    centre, reach, missed, most, shown, missing = None, 0.0, 0, 0, 0, 0
    for faces in aligned_faces(source, tracker_crop_size(size), progress, model_fps=model_fps):
        if faces is None:  # a frame the model is not shown
            crops.append(None)
            continue
        shown, most = shown + 1, max(most, len(faces))
        face = largest_face(faces) if centre is None or missed >= REACQUIRE_AFTER else nearest_face(faces, centre, reach)
        if face is None:
            missed, missing = missed + 1, missing + 1
            crops.append(None)
            continue
        centre, reach, missed = box_centre(face.box), max(face.box[2] - face.box[0], face.box[3] - face.box[1]) / 2, 0
        crops.append(fit_crops(face.crop[None], size)[0])
    return crops, shown, missing, most
