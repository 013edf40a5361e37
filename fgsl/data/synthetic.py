"""Synthetic micro-expressions injected into real face video, with exact ground truth.

No licensed micro-expression data set can be had here, so training, the live spotter's
tests and the benchmark are proven on real faces with injected movements whose onset, apex,
offset and class are known.

How a set is made
-----------------
1. **Faces.** Each source video's faces are found with OpenCV's bundled Haar cascade on a
   few frames (median box per face, left to right), and each face becomes one *subject*
   cropped with a fixed square box (the box enlarged by ``MARGIN``), named after the video
   file (its name without the suffix; two sources with one name, or one file given twice, are
   refused: :func:`face_sources`). This is the "simple fixed crop" the issue allows (the
   videos here hold their heads fairly still); the live spotter then finds and aligns the
   face in these crops with ``realtime.face`` like in any other video. ``align=True``
   (``--align``) instead aligns each face with that same pipeline
   (:func:`read_aligned_face_frames`), so the videos are framed exactly as the live spotter
   frames faces, and the injected regions move with it (:data:`ALIGNED_SCALE`).
2. **Segments.** ``part="train"`` uses the first 60 % of each source video, ``part="val"``
   the next 15 % (validation: choosing the epoch and the score threshold) and
   ``part="test"`` the last 25 % (:data:`PARTS`), so validation and held-out videos never
   show a training frame, and the validation videos' own natural movements are as new to
   a model as the test videos' are. A segment
   is played forward and backward (ping-pong) to the requested length, holding still for
   :data:`BOUNCE_HOLD_S` at each bounce (else the bounce is an unlabelled brief movement); a random horizontal
   flip and brightness gain vary it. A video more than :data:`MAX_REPEATS` times as long as
   its segment is made with a warning.
3. **Events.** Non-overlapping events with 3-15 frames from onset to offset (at 30 fps;
   scaled for other rates), the apex 30-60 % of the way in. The class picks the facial
   regions that move and how (``REGIONS``): positive = mouth corners up and out, cheeks
   up; negative = inner brows down and together, mouth corners down; surprise = brows and
   upper lids up, jaw drop; others = one mouth corner pulled sideways (unilateral).
4. **Motion.** A smooth displacement field (Gaussian bumps, sigma 7 % of the face box, 6.1 % of the crop, around
   each region, times the region's direction, times ``amplitude`` pixels of the crop, at
   most :data:`MAX_AMPLITUDE` of it), scaled in time by a raised cosine that rises from 0
   at the onset to 1 at the apex and falls back to 0 at the offset; frames are warped with
   ``cv2.remap``.
5. **Output.** Lossless FFV1 ``.avi`` crops of ``size``×``size`` at the source fps in
   ``DIR/videos/`` and the ground truth in ``DIR/annotations.csv`` (the one annotation
   table; all events are ``micro``), plus ``DIR/synthetic.json`` describing the recipe.
   The set is built in ``DIR/.synthetic-partial/`` and replaces a set made there before only
   when whole (:func:`claim`, :func:`install`): a failed run leaves the old set as it was.

``events=False`` ("noise mode") writes the same kind of videos with no events and small
Gaussian pixel noise, for false-positive rates.

``still=True`` holds one real frame of the segment for the whole video (a still face, as
in a lab recording of a subject told to keep still) and adds the same sensor noise;
``sway`` (pixels) moves the whole face by a slow random drift (:func:`head_sway`), as a
subject told to keep still still drifts. The training-free flow spotter is measured on both
kinds (docs/benchmarks.md), since the shared source videos themselves talk, smile and change
expression all the time.

CLI: ``python -m fgsl.data.synthetic --videos A.mp4 ... --out DIR [--count N] [--frames F]
[--amplitude PX] [--part train|val|test] [--no-events] [--still] [--sway PX] [--seed S]``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from fgsl.startup import quiet_exit, startup_imports

# Importing OpenCV takes a moment: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import cv2
    import numpy as np
    from tqdm import tqdm

    from fgsl.config import ConfigError, is_positive_number
    from fgsl.files import atomic_write, given_twice
    from fgsl.data.table import Annotation, write_table
    from fgsl.data.frames import VideoError, opencv_name, opencv_quiet, open_source

#: The crop is the detected face box enlarged by this factor (square, same centre).
MARGIN = 1.15

#: Region centres in face-box coordinates (0..1; the Haar box spans brows to chin) and the
#: direction each moves, per class. Directions are in units of the amplitude.
REGIONS: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {
    "positive": [
        ((0.37, 0.78), (-0.6, -0.8)),
        ((0.63, 0.78), (0.6, -0.8)),
        ((0.30, 0.62), (0.0, -0.5)),
        ((0.70, 0.62), (0.0, -0.5)),
    ],
    "negative": [
        ((0.42, 0.27), (0.5, 0.8)),
        ((0.58, 0.27), (-0.5, 0.8)),
        ((0.37, 0.78), (0.0, 0.8)),
        ((0.63, 0.78), (0.0, 0.8)),
    ],
    "surprise": [
        ((0.30, 0.25), (0.0, -1.0)),
        ((0.42, 0.27), (0.0, -1.0)),
        ((0.58, 0.27), (0.0, -1.0)),
        ((0.70, 0.25), (0.0, -1.0)),
        ((0.32, 0.37), (0.0, -0.5)),
        ((0.68, 0.37), (0.0, -0.5)),
        ((0.50, 0.92), (0.0, 0.6)),
    ],
    "others": [
        ((0.63, 0.78), (1.0, 0.0)),
        ((0.70, 0.66), (0.4, 0.0)),
    ],
}
CLASSES = tuple(REGIONS)
SIGMA = 0.07  # bump width, fraction of the face box (SIGMA / MARGIN of the crop: 6.1 %)

#: Face-box coordinates -> coordinates of the live spotter's aligned crop (``realtime.face``:
#: eyes and nose on fixed positions): ``aligned = scale * box + offset`` per axis. Fitted by
#: least squares on 6,392 MediaPipe landmark observations (mouth corners, brows, lids, cheeks,
#: chin, nose, eye corners) of the shared videos' faces, median error 1.5 % (x) and 1.7 % (y)
#: of the crop, 2026-11-26.
ALIGNED_SCALE = (0.877, 0.891)
ALIGNED_OFFSET = (0.051, -0.069)
_CASCADE = "haarcascade_frontalface_default.xml"


#: The smallest crop, pixels: the tiny preset's input. Smaller crops blur an injected bump
#: (sigma 6.1 % of the crop) to about two pixels, and a 0 px crop cannot be made at all.
MIN_SIZE = 32
#: The largest crop, pixels: four times the default and the models' 112 px input. Every
#: frame of a source is held in memory as a crop (a 1,008-frame source at 512 px is 0.8 GB,
#: more with a sway's margin), and ``--size 100000`` ended in an OpenCV out-of-memory traceback.
MAX_SIZE = 512
#: The largest head sway, as a fraction of the crop: an eighth (16 px of a 128 px crop) is far
#: more than a subject told to keep still drifts; the crops are read with a margin of three
#: sways on every side (:func:`make_set`), so ``--sway 1e6`` asked for terabytes.
MAX_SWAY = 1 / 8
#: The largest ``--amplitude``, as a fraction of the crop: an eighth (16 px of a 128 px crop),
#: a third above the 12 px that fgsl.train, realtime.bench and the benchmarks use. The warp
#: bends the picture by bumps of sigma 6.1 % of the crop (:data:`SIGMA` / :data:`MARGIN`), whose
#: steepest slope is 0.61 x amplitude / sigma: from about 9 % of the crop on (11 px of 128; the
#: 12 px in use folds a sliver where bumps overlap) the picture folds over itself, and far beyond
#: it (``--amplitude 500`` on a 128 px crop) the "movement" is torn, mirrored picture, not a
#: facial movement a spotter should learn.
MAX_AMPLITUDE = 1 / 8
#: The longest video, frames (100 s at 30 fps): each is built in memory (a few hundred MB at
#: the default size), and ``--synthetic-frames 100000`` had the kernel kill the run unannounced.
MAX_FRAMES = 3000

#: Which fraction of each source video a part reads: [start, end).
PARTS: dict[str, tuple[float, float]] = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}
#: A video more than this many times as long as the part of its source that it plays (ping-pong,
#: :func:`ping_pong`) gets a warning: it then shows the same few real movements over and over
#: (``--frames 3000 --part test`` on a 2.4-s source played its 18 frames 167 times). The
#: documented uses stay below it: fgsl.train's default 192-frame videos play the shared 2.4-s
#: face's 11-frame val part 17.5 times, the benchmarks' 300-frame videos its 18-frame test part
#: 16.7 times. ``still`` videos hold one frame whatever the part's length and are not warned about.
MAX_REPEATS = 20


def part_frames(count: int, part: str) -> slice:
    """The frames of a ``count``-frame source that ``part`` reads (never empty)."""
    start, end = PARTS[part]
    lo = min(int(count * start), count - 1)
    return slice(lo, max(lo + 1, int(count * end)))


class RecipeError(ConfigError):
    """Numbers that make no synthetic set. A :class:`~fgsl.config.ConfigError` (so a
    ``ValueError``), which every command reports as one ``error:`` line: besides this module's
    CLI, fgsl.train and realtime.bench build recipes from their own flags."""


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a synthetic set (saved as ``synthetic.json``)."""

    count: int = 8
    frames: int = 128
    size: int = 128
    amplitude: float = 3.0
    part: str = "train"
    events: bool = True
    seed: int = 0
    min_frames: int = 3
    max_frames: int = 15
    noise: float = 2.0
    still: bool = False
    align: bool = False
    sway: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sway) and self.sway >= 0) or (self.sway and self.align):
            raise RecipeError("--sway must be >= 0 and works on fixed crops only (not with --align)")
        if self.count < 1:
            raise RecipeError(f"--count must be at least 1, got {self.count}")
        if not self.max_frames <= self.frames <= MAX_FRAMES:
            raise RecipeError(f"--frames must be {self.max_frames}-{MAX_FRAMES} (room for the longest event, and "
                              f"memory), got {self.frames}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise RecipeError(f"--size must be {MIN_SIZE}-{MAX_SIZE} pixels, got {self.size}")
        if self.sway > MAX_SWAY * self.size:
            raise RecipeError(f"--sway must be at most {MAX_SWAY * self.size:g} pixels (an eighth of the "
                              f"{self.size} px crop), got {self.sway:g}")
        if not is_positive_number(self.amplitude):
            raise RecipeError(f"--amplitude must be a positive number of pixels, got {self.amplitude}")
        if self.amplitude > MAX_AMPLITUDE * self.size:
            raise RecipeError(f"--amplitude must be at most {MAX_AMPLITUDE * self.size:g} pixels (an eighth of the "
                              f"{self.size} px crop), got {self.amplitude:g}")


@dataclass(frozen=True)
class FaceSource:
    """One face of one source video: the subject of the videos made from it."""

    video: Path
    subject: str
    box: tuple[int, int, int]  # x, y, side of the square crop in source pixels


# ---------------------------------------------------------------------------- faces
def find_faces(path: Path, probes: int = 5) -> list[tuple[int, int, int]]:
    """Square crop boxes of the faces in ``path`` (median over a few frames, left to right).

    OpenCV 5 moved the Haar cascades out of the main build: opencv-python(-headless) 5 has no
    ``CascadeClassifier`` (seen on a GPU machine's image), opencv-contrib-python, which this
    package depends on, has it. Without it a new user got an AttributeError traceback."""
    if not hasattr(cv2, "CascadeClassifier"):
        raise _usage_error(f"this OpenCV ({cv2.__version__}) has no CascadeClassifier, which finds the faces of "
                           "synthetic sets: install opencv-contrib-python, the OpenCV this package depends on "
                           "(pip uninstall opencv-python opencv-python-headless; pip install opencv-contrib-python)")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE)
    cap = cv2.VideoCapture(opencv_name(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
    detections: list[np.ndarray] = []
    for i in range(probes):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i * total / probes))
        ok, frame = cap.read()
        if not ok:
            continue
        height, width = frame.shape[:2]
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(min(height, width) // 8,) * 2)
        if len(found):
            detections.append(found[np.argsort(found[:, 0])])
    cap.release()
    if not detections:
        return []
    count = int(np.median([len(d) for d in detections]))
    boxes = np.median(np.stack([d[:count] for d in detections if len(d) == count]), axis=0)
    out = []
    for x, y, w, h in boxes:
        side = int(round(max(w, h) * MARGIN))
        out.append((int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2)), side))
    return out


def face_sources(videos: list[Path]) -> list[FaceSource]:
    """One :class:`FaceSource` per face of ``videos``; its subject is the video's file name
    without the suffix (``_face0``, ``_face1`` … added where a video has several faces).

    Why sources that share a subject are refused: a set's videos (``<subject>_<part>NNN.avi``)
    and ``annotations.csv`` rows are named after the subject, so ``a/face.mp4`` and
    ``b/face.mp4`` (or ``face.mp4`` and ``face.avi`` in one folder) wrote over each other's
    videos and left both sources' events pinned on the survivors. The same file given twice
    would make each of its faces two subjects of one set. Both are a :class:`~fgsl.cli.UsageError`
    naming both paths, raised before :func:`make_set` writes anything.
    """
    twice = given_twice("source video", videos, "each of its faces would be two subjects of one set; give it once")
    if twice is not None:
        raise _usage_error(twice)
    sources: list[FaceSource] = []
    taken: dict[str, Path] = {}  # subject -> the video that named it
    for video in videos:
        open_source(video)  # a missing or unreadable file says so, not "no face found"
        boxes = find_faces(video)
        if not boxes:
            raise VideoError(f"{video}: no face found for synthetic injection")
        for i, box in enumerate(boxes):
            subject = video.stem if len(boxes) == 1 else f"{video.stem}_face{i}"
            if subject in taken:
                raise _usage_error(f"source videos {taken[subject]} and {video} would both be subject {subject!r}: "
                                   f"one's videos ({subject}_<part>NNN.avi) would overwrite the other's and "
                                   "annotations.csv would pin both sources' events on them; rename one")
            taken[subject] = video
            sources.append(FaceSource(video, subject, box))
    return sources


def _usage_error(message: str) -> Exception:
    """A :class:`fgsl.cli.UsageError` (one ``error:`` line in every command); imported here, as
    fgsl.cli loads torch, which building a set does not need."""
    from fgsl.cli import UsageError

    return UsageError(message)


def read_face_frames(source: FaceSource, size: int, pad: int = 0) -> tuple[np.ndarray, float]:
    """All frames of the source face as ``[F, size + 2 pad, size + 2 pad, 3]`` BGR crops, and
    the fps: the crop box, widened by ``pad`` output pixels of real picture on every side (what
    a head sway brings into view, :func:`head_sway`)."""
    video = open_source(source.video)
    x, y, side = source.box
    extra = round(pad * side / size)
    x, y, side = x - extra, y - extra, side + 2 * extra
    out = size + 2 * pad
    crops = []
    for frame in video:
        padded = cv2.copyMakeBorder(frame, side, side, side, side, cv2.BORDER_REPLICATE)
        crop = padded[y + side : y + 2 * side, x + side : x + 2 * side]
        crops.append(cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA))
    return np.stack(crops), video.fps


def read_aligned_face_frames(source: FaceSource, size: int) -> tuple[np.ndarray, float]:
    """All frames of the source face aligned by the live spotter's face pipeline
    (``realtime.face``: MediaPipe landmarks, One Euro-smoothed similarity putting eyes and
    nose on fixed positions) as ``[F, size, size, 3]`` BGR crops, and the fps.

    Why: the live spotter feeds a model aligned crops, so a model trained on these sees the
    framing it will meet live. The face is the one whose box centre lies nearest the
    source's Haar box centre (within half the box, :func:`fgsl.data.aligned.nearest_face`;
    ``fgsl.data.aligned.read_aligned_crops``, which has no such box, follows the largest face
    instead); a frame without it repeats the nearest aligned frame before it (or, at the
    start, the first one found).
    """
    from fgsl.data.aligned import aligned_faces, fill_gaps, nearest_face  # lazy: only aligned sets need MediaPipe

    video = open_source(source.video)
    x, y, side = source.box
    centre = np.array([x + side / 2, y + side / 2])
    crops = [None if face is None else cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR)
             for face in (nearest_face(faces, centre, side / 2) for faces in aligned_faces(video, size))]
    if all(c is None for c in crops):
        raise VideoError(f"{source.video}: MediaPipe found no face near {source.subject}'s box to align")
    return fill_gaps(crops), video.fps


# ---------------------------------------------------------------------------- motion
def crop_coordinates(point: tuple[float, float], aligned: bool = False) -> tuple[float, float]:
    """Face-box coordinates -> crop coordinates: the fixed crop is the box enlarged by
    MARGIN; the aligned crop is :data:`ALIGNED_SCALE` / :data:`ALIGNED_OFFSET` of it."""
    if aligned:
        return tuple(a * p + b for p, a, b in zip(point, ALIGNED_SCALE, ALIGNED_OFFSET))  # type: ignore[return-value]
    return tuple(0.5 + (p - 0.5) / MARGIN for p in point)  # type: ignore[return-value]


def displacement_field(emotion: str, size: int, amplitude: float, flip: bool, aligned: bool = False) -> np.ndarray:
    """``[size, size, 2]`` (dx, dy) in pixels at full strength for one class."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    field = np.zeros((size, size, 2), np.float32)
    sigma = SIGMA * float(np.mean(ALIGNED_SCALE)) if aligned else SIGMA / MARGIN
    for (cx, cy), (dx, dy) in REGIONS[emotion]:
        cx, cy = crop_coordinates((cx, cy), aligned)
        if flip:
            cx, dx = 1.0 - cx, -dx
        bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        field[..., 0] += bump * dx * amplitude
        field[..., 1] += bump * dy * amplitude
    return field


def temporal_profile(onset: int, apex: int, offset: int, frame: int) -> float:
    """0 at onset, 1 at apex, 0 at offset; raised-cosine ramps; 0 outside."""
    if frame <= onset or frame >= offset:
        return 0.0
    if frame <= apex:
        return 0.5 * (1 - math.cos(math.pi * (frame - onset) / max(apex - onset, 1)))
    return 0.5 * (1 + math.cos(math.pi * (frame - apex) / max(offset - apex, 1)))


def warp(frame: np.ndarray, field: np.ndarray, strength: float) -> np.ndarray:
    """Move content by ``strength * field`` (backward mapping with ``cv2.remap``)."""
    size = frame.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    map_x = xx - strength * field[..., 0]
    map_y = yy - strength * field[..., 1]
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def place_events(frames: int, fps: float, recipe: Recipe, rng: np.random.Generator) -> list[tuple[int, int, int, str]]:
    """Random non-overlapping (onset, apex, offset, class) with a gap of at least one event."""
    scale = fps / 30.0
    lo, hi = max(2, round(recipe.min_frames * scale)), max(3, round(recipe.max_frames * scale))
    events: list[tuple[int, int, int, str]] = []
    cursor = int(rng.integers(hi // 2, 2 * hi))
    while True:
        length = int(rng.integers(lo, hi + 1))
        onset = cursor
        offset = onset + length - 1
        if offset >= frames - 2:
            return events
        apex = onset + max(1, int(round(rng.uniform(0.3, 0.6) * (length - 1))))
        events.append((onset, min(apex, offset - 1), offset, str(rng.choice(CLASSES))))
        cursor = offset + int(rng.integers(hi, 3 * hi))


#: How long a ping-pong bounce holds its frame, seconds. A bounce turns whatever the face was
#: doing into its reverse at once: a brief there-and-back movement that no ground truth
#: lists (on moving test clips, 25 of the flow spotter's 34 false alarms lay at bounces,
#: docs/benchmarks.md). Resting longer than a spotter's there-and-back span (twice the flow
#: spotter's 1/3 s lag) turns a bounce into a stop and a start.
BOUNCE_HOLD_S = 0.8


def ping_pong(frames: np.ndarray, length: int, phase: float, hold: int = 0) -> np.ndarray:
    """``length`` frames bouncing between both ends of ``frames``, resting ``hold`` extra
    frames at each end, starting ``phase`` (0-1) of the way into the cycle."""
    n = len(frames)
    if n == 1:
        return np.repeat(frames, length, 0)
    cycle = [*range(1, n - 1), *[n - 1] * (1 + hold), *range(n - 2, 0, -1), *[0] * (1 + hold)]
    start = int(phase * len(cycle)) % len(cycle)
    return frames[[cycle[(start + i) % len(cycle)] for i in range(length)]]


#: Frequencies of the head sway's waves, Hz: a slow drift (a 0.5 Hz wave takes a second to
#: swing one way) next to events that rise and fall within 0.1-0.5 s.
SWAY_HZ = (0.05, 0.5)
SWAY_WAVES = 3


def head_sway(frames: int, fps: float, size: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """``[frames, 2, 3]`` affine matrices of a smooth random head drift: sideways, up-down and
    roll, each a sum of :data:`SWAY_WAVES` sinusoids (:data:`SWAY_HZ`, random phases) whose
    largest excursion from the first frame is ``amplitude`` pixels (roll: at the frame's edge).

    Why: a still face (``--still``) holds one frame exactly, but a person told to keep still
    still drifts a little, and that drift is what the face alignment and the spotter's
    head-motion removal must absorb without reporting movements. The waves are a chosen test
    condition, not a measured model of human sway.
    """
    t = np.arange(frames) / fps

    def wave() -> np.ndarray:
        freq = rng.uniform(*SWAY_HZ, SWAY_WAVES)[:, None]
        phase = rng.uniform(0, 2 * np.pi, SWAY_WAVES)[:, None]
        weight = rng.uniform(0.5, 1.0, SWAY_WAVES)[:, None]
        drift = (weight * np.sin(2 * np.pi * freq * t + phase)).sum(axis=0)
        drift -= drift[0]
        return drift / max(float(np.abs(drift).max()), 1e-9)

    dx, dy, roll = amplitude * wave(), amplitude * wave(), amplitude / (size / 2) * wave()
    centre = (size - 1) / 2
    cos, sin = np.cos(roll), np.sin(roll)
    matrices = np.empty((frames, 2, 3), np.float32)
    matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 1, 0], matrices[:, 1, 1] = cos, -sin, sin, cos
    matrices[:, 0, 2] = centre - cos * centre + sin * centre + dx
    matrices[:, 1, 2] = centre - sin * centre - cos * centre + dy
    return matrices


# ---------------------------------------------------------------------------- writing
def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Lossless FFV1 AVI, so injected sub-pixel motion survives storage.

    OpenCV's writer drops a frame it cannot write with a log line and no error (a full disk,
    a file-size limit), which would leave a cut-off video in a set recorded as finished. So
    the file is read back after ``release()``: fewer frames than written is an ``OSError``
    naming the file (``error: PATH: cannot write video (No space left on device)``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    size = frames.shape[2], frames.shape[1]
    with opencv_quiet():  # our error says it, not a WARN per frame
        writer = cv2.VideoWriter(opencv_name(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, size)
        if not writer.isOpened():
            raise VideoError(f"{path}: OpenCV cannot write FFV1 video here")
        for frame in frames:
            writer.write(frame)
        writer.release()
    written = _decodable_frames(path)
    if written != len(frames):
        error, reason = _write_failure(path)
        raise OSError(error, f"cannot write video ({reason}; {written} of {len(frames)} frames readable)", str(path))


def _decodable_frames(path: Path) -> int:
    """How many frames of ``path`` decode (the header's count describes what was asked, not
    what reached the disk)."""
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.isOpened() and cap.grab():
        count += 1
    cap.release()
    return count


def _write_failure(path: Path) -> tuple[int, str]:
    """(errno, reason) why writing ``path`` stopped: the error that appending to it gives now
    (ENOSPC for a full disk, EFBIG past a file-size limit); EIO when appending works. The file
    is broken already; :func:`make_set` writes it in a staging folder that is then removed."""
    try:
        with path.open("ab") as f:
            f.write(bytes(1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno is not None and exc.strerror:
            return exc.errno, exc.strerror
    return errno.EIO, "the video file is cut short"


def made_aligned(video: str | Path) -> bool:
    """Whether ``video`` is a clip of a finished set made with ``--align`` (``DIR/videos/X``
    beside ``DIR/synthetic.json``): a MediaPipe-aligned face crop already, read as it is by
    :func:`fgsl.data.video.read_crops` even when aligned crops are asked for. However the
    clip is named (relative to its own folder, through a link)."""
    path = Path(video).resolve()
    if path.parent.name != "videos":
        return False
    try:
        recipe = json.loads((path.parent.parent / "synthetic.json").read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):  # no record, not ours, not a JSON object
        return False
    return isinstance(recipe, dict) and recipe.get("align") is True


#: The hidden folder inside ``--out`` where a new set is built before it replaces the old one.
STAGING = ".synthetic-partial"
#: ``synthetic.json`` of a set that is not whole: fgsl.train reuses only a record with a recipe.
UNFINISHED = {"recipe": None, "note": "being written"}


def claim(out: Path) -> Path:
    """Check that ``out`` may hold a new set and return an empty staging folder inside it.

    Why: the new set is built in the staging folder and only :func:`install` touches the old
    set, so a failed or interrupted run (a full disk, Ctrl-C, no face to align) leaves the old
    set as it was, still recorded as finished. Only a folder with a ``synthetic.json`` is the
    generator's; files in any other ``videos/`` are not ours to replace. A new folder gets the
    "being written" record at once, which marks it as ours (a later run may clean it up) and
    never as a finished set. A staging folder left by a killed run is removed.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a folder for a synthetic set")
    videos = out / "videos"
    if not (out / "synthetic.json").is_file():
        if videos.exists() and (not videos.is_dir() or any(videos.iterdir())):
            raise FileExistsError(f"{videos} holds files but {out} has no synthetic.json (not a synthetic set to "
                                  "replace): choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        _mark_unfinished(out)
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _mark_unfinished(out: Path) -> None:
    atomic_write(out / "synthetic.json", (json.dumps(UNFINISHED) + "\n").encode())


def install(staging: Path, out: Path, meta: dict[str, object]) -> None:
    """Move the whole new set from ``staging`` into ``out`` and record it as finished.

    Why this order: the old record is first replaced by the "being written" one (before that
    nothing of the old set has changed; a full disk here leaves it whole and finished), then
    the new files are renamed into place (no copying: the same file system), the old set's
    videos that the new one does not replace are removed (a video without rows in
    ``annotations.csv`` would read as an event-free one, :func:`fgsl.data.spec.load_folder`),
    and the recipe is written last: a set is recorded as finished only when it is whole.
    """
    _mark_unfinished(out)
    videos = out / "videos"
    videos.mkdir(exist_ok=True)
    new = {p.name for p in (staging / "videos").glob("*.avi")}
    for name in sorted(new):
        os.replace(staging / "videos" / name, videos / name)
    os.replace(staging / "annotations.csv", out / "annotations.csv")
    for old in videos.glob("*.avi"):
        if old.name not in new:
            old.unlink()
    # Atomic, like every product file (fgsl.files): this record marks the set finished, and
    # fgsl.train reuses a set whose record matches its flags; a cut-off record reads as no
    # finished set and costs a rebuild.
    atomic_write(out / "synthetic.json", (json.dumps(meta, indent=2) + "\n").encode())


def _name_final_path(exc: OSError, staging: Path, out: Path) -> None:
    """Make ``exc`` name the file where the user will look for it, not its hidden staging copy."""
    if exc.filename is not None and Path(exc.filename).is_relative_to(staging):
        exc.filename = str(out / Path(exc.filename).relative_to(staging))


def make_set(videos: list[Path], out: Path, recipe: Recipe, progress: bool = True) -> list[Annotation]:
    """Write ``recipe.count`` videos per face of ``videos`` into ``out`` (replacing a set made
    there before only once the new one is whole: :func:`claim`, :func:`install`); return the table."""
    if recipe.part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, not {recipe.part!r}")
    out = Path(out)
    check_memory(recipe)
    sources = face_sources([Path(v) for v in videos])
    staging = claim(out)
    try:
        # (the bar is closed before an error propagates: else its line and the error share one)
        with tqdm(total=len(sources) * recipe.count, desc="synthetic", unit="video", disable=not progress,
                  file=sys.stderr) as bar:
            rows = _build(sources, staging, recipe, bar)
        meta = {"recipe": asdict(recipe),  # sources resolved: a set is reused from any working folder
                "sources": [{"video": str(Path(s.video).resolve()), "subject": s.subject, "box": s.box} for s in sources]}
        install(staging, out, meta)
    except OSError as exc:
        _name_final_path(exc, staging, out)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def sway_pad(recipe: Recipe) -> int:
    """Pixels read around each crop for ``recipe.sway``. A sway moves the crop's corners by up
    to about 2.4 x ``sway`` pixels (``sway`` sideways plus a roll of ``sway`` at the frame's
    edge): more picture than that is read around each crop, moved, and the crop cut from its
    middle, so no border is ever made up."""
    return math.ceil(3 * recipe.sway) + 1 if recipe.sway else 0


def _build(sources: list[FaceSource], out: Path, recipe: Recipe, bar: tqdm) -> list[Annotation]:
    """Write the set's videos and ``annotations.csv`` into ``out`` (the staging folder)."""
    rng = np.random.default_rng(recipe.seed)
    rows: list[Annotation] = []
    pad = sway_pad(recipe)
    for source in sources:
        if recipe.align:
            faces, fps = read_aligned_face_frames(source, recipe.size)
        else:
            faces, fps = read_face_frames(source, recipe.size, pad)
        segment = faces[part_frames(len(faces), recipe.part)]
        if not recipe.still and recipe.frames > MAX_REPEATS * len(segment):
            warnings.warn(f"{source.video}: its {recipe.part} part is {len(segment)} frames, played "
                          f"{recipe.frames / len(segment):.0f} times over in each {recipe.frames}-frame video "
                          f"(more than {MAX_REPEATS} times: the same few real movements again and again); use a "
                          "longer source video or fewer frames", stacklevel=2)
        for k in range(recipe.count):
            name = f"{source.subject}_{recipe.part}{k:03d}"
            if recipe.still:
                clip = np.repeat(segment[int(rng.integers(0, len(segment)))][None], recipe.frames, axis=0)
            else:
                clip = ping_pong(segment, recipe.frames, float(rng.random()), round(BOUNCE_HOLD_S * fps))
            flip = bool(rng.integers(0, 2))
            if flip:
                clip = clip[:, :, ::-1]
            clip = clip.astype(np.float32)  # (in place from here: a 3000-frame 480 px clip is 8 GB of float32)
            clip *= rng.uniform(0.85, 1.15)
            np.clip(clip, 0, 255, out=clip)
            if recipe.events:
                for onset, apex, offset, emotion in place_events(len(clip), fps, recipe, rng):
                    field = displacement_field(emotion, recipe.size, recipe.amplitude, flip, recipe.align)
                    field = np.pad(field, ((pad, pad), (pad, pad), (0, 0)))
                    for t in range(onset + 1, offset):
                        clip[t] = warp(clip[t], field, temporal_profile(onset, apex, offset, t))
                    rows.append(Annotation(source.subject, name, onset, apex, offset, "micro", emotion, ""))
            if recipe.sway:
                side = recipe.size + 2 * pad
                for t, matrix in enumerate(head_sway(len(clip), fps, side, recipe.sway, rng)):
                    clip[t] = cv2.warpAffine(clip[t], matrix, (side, side), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE)
                clip = clip[:, pad : pad + recipe.size, pad : pad + recipe.size]
            write_video(out / "videos" / f"{name}.avi",
                        _to_frames(clip, rng, recipe.noise if recipe.still or not recipe.events else None), fps)
            bar.update(1)
    write_table(rows, out / "annotations.csv")
    return rows


def _to_frames(clip: np.ndarray, rng: np.random.Generator, noise: float | None) -> np.ndarray:
    """uint8 frames of the float clip, with Gaussian pixel noise of ``noise`` (``None``: none),
    a frame at a time: the whole clip's noise at once was float64, 8 bytes a pixel (a 3000-frame
    480 px clip: 16.6 GB more, killed for memory with no message). The same draws in the same
    order, so a seed makes the same set as before."""
    frames = np.empty(clip.shape, np.uint8)
    for t in range(len(clip)):
        frame = clip[t] if noise is None else clip[t] + rng.normal(0, noise, clip[t].shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


#: Bytes a synthetic video's pixel takes while it is made: the looped uint8 clip, its float32
#: copy that the movements are warped into, and the uint8 frames written (:func:`_build`).
BYTES_PER_PIXEL = 1 + 4 + 1


def check_memory(recipe: Recipe) -> None:
    """Refuse a recipe whose videos cannot be made in this machine's memory, before minutes of
    reading: the kernel would kill the process with no message (``Killed``)."""
    pad = sway_pad(recipe)
    need = recipe.frames * (recipe.size + 2 * pad) ** 2 * 3 * BYTES_PER_PIXEL
    available = _available_memory()
    if available is not None and need > available:
        raise RecipeError(f"--frames {recipe.frames} at --size {recipe.size} needs about {need / 1e9:.1f} GB of "
                          f"memory per video, and {available / 1e9:.1f} GB is available: use fewer --frames or a "
                          "smaller --size")


#: Memory limit, use and statistics files of a cgroup folder: cgroup v2 (its mount point and
#: the files; no limit reads "max"), then v1's memory controller (no limit: a huge number).
#: The kernel kills a process at its cgroup's limit, or an ancestor's, however much the machine
#: has, and ``/proc/meminfo`` shows the machine's.
CGROUP_MEMORY = (("", "sys/fs/cgroup", ("memory.max", "memory.current", "memory.stat")),
                 ("memory", "sys/fs/cgroup/memory",
                  ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat")))


def _cgroup_folders(root: Path, controller: str, mount: str) -> list[Path]:
    """This process's cgroup folder for ``controller`` ("" is v2's unified line) and its
    ancestors up to the mount point, from ``/proc/self/cgroup``. A path that is not under the
    mount (a container that shows its own cgroup at the root) is read at the mount point."""
    base = root / mount
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (controllers == "" and controller == "") or (controller and controller in controllers.split(",")):
            own = base / path.strip("/")
            if not own.is_dir():
                return [base]
            return [own, *[p for p in own.parents if p.is_relative_to(base)]]
    return [base]


def _available_memory(root: Path = Path("/")) -> int | None:
    """What can be allocated without swapping or being killed: MemAvailable of
    ``/proc/meminfo``, or less where the limit minus the use of this process's cgroup, or of
    an ancestor (a Slurm job, a systemd slice), is less; None if unknown.

    A cgroup's use counts the page cache, most of which the kernel gives back before it kills:
    as ``docker stats`` does, inactive file pages are not counted as used."""
    found: list[int] = []
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for controller, mount, (limit_file, usage_file, stat_file) in CGROUP_MEMORY:
        levels = 0
        for folder in _cgroup_folders(root, controller, mount):
            try:
                limit = (folder / limit_file).read_text().strip()
                used = int((folder / usage_file).read_text())
            except (OSError, ValueError):
                continue
            levels += 1
            try:
                stats = dict(line.split() for line in (folder / stat_file).read_text().splitlines())
                used -= int(stats.get("total_inactive_file", stats.get("inactive_file", 0)))  # v1: whole subtree
            except (OSError, ValueError):
                pass
            if limit.isdigit():
                found.append(max(0, int(limit) - max(0, used)))
        if levels:
            break  # (v2 found: v1 files, if any, are another hierarchy's leftovers)
    return min(found) if found else None


def main(argv: list[str] | None = None) -> int:
    # fgsl.cli imports torch, a second or two before run() below catches Ctrl-C (fgsl.startup).
    with startup_imports(__name__):
        from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, at_least, non_negative_number, positive_number,
                              register_user_error, run)
        from realtime.types import RealtimeError  # (light: no MediaPipe)

    register_user_error(RealtimeError)  # --align: MediaPipe cannot start (not installed, no libEGL): one line
    parser = ArgumentParser(prog="python -m fgsl.data.synthetic", formatter_class=HelpFormatter,
                            description="Inject synthetic micro-expressions into real face videos.")
    parser.add_argument("--videos", nargs="+", required=True,
                        help="real face videos, each once and with its own file name (the name, without its suffix, "
                             "names the subject and its videos)")
    parser.add_argument("--out", required=True, help="output folder (videos/, annotations.csv, synthetic.json)")
    parser.add_argument("--count", type=int, default=Recipe.count, help="videos per face")
    parser.add_argument("--frames", type=int, default=Recipe.frames,
                        help=f"frames per video ({Recipe.max_frames}-{MAX_FRAMES}); a warning when that plays the "
                             f"--part of a source more than {MAX_REPEATS} times over")
    parser.add_argument("--size", type=int, default=Recipe.size, help=f"crop size in pixels ({MIN_SIZE}-{MAX_SIZE})")
    parser.add_argument("--amplitude", type=positive_number, default=Recipe.amplitude,
                        help="peak displacement in crop pixels (at most an eighth of --size)")
    parser.add_argument("--part", choices=tuple(PARTS), default="train",
                        help="which part of each source video to use: train (first 60 %%), val (next 15 %%), test (last 25 %%)")
    parser.add_argument("--no-events", action="store_true", help="noise mode: no events, Gaussian pixel noise")
    parser.add_argument("--still", action="store_true", help="hold one real frame per video (a still face) plus sensor noise")
    parser.add_argument("--sway", type=non_negative_number, default=Recipe.sway,
                        help="slow random head drift (sideways, up-down, roll), largest excursion in crop pixels "
                             "(0: none; at most an eighth of --size)")
    parser.add_argument("--align", action="store_true",
                        help="align each face with the live spotter's face pipeline (MediaPipe) instead of a fixed crop")
    parser.add_argument("--seed", type=at_least(0), default=0,  # (numpy refuses negative seeds)
                        help="random seed: the same seed and flags make the same set")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        out = Path(args.out)
        for video in args.videos:  # a set made over its own source videos would delete them first
            if Path(video).resolve().is_relative_to(out.resolve()):
                raise UsageError(f"--videos {video} lies in --out {out}, which the new set replaces; write it elsewhere")
        try:
            recipe = Recipe(count=args.count, frames=args.frames, size=args.size, amplitude=args.amplitude,
                            part=args.part, events=not args.no_events, still=args.still, seed=args.seed,
                            align=args.align, sway=args.sway)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        rows = make_set([Path(v) for v in args.videos], Path(args.out), recipe)
        print(f"wrote {recipe.count} videos per face and {len(rows)} events to {args.out}")
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
