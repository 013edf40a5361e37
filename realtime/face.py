"""Face tracking and stabilised alignment: :class:`Frame` -> :class:`FaceObservation` per face.

MediaPipe's FaceLandmarker (Tasks API, VIDEO mode) gives 478 landmarks and 52 blendshapes per
face. On top of it this module adds what the spotter needs and MediaPipe does not give:

* **stable track ids**: detections are matched to live tracks by landmark-box IoU (centre
  distance as a fallback), a track ends once its face has been missed for ``lost_after_s``
  (1/3 s: 10 frames at 30 fps, 67 at SAMM's 200) and in at least ``MIN_MISSED`` frames, so a
  brief dropout does not split it, and ids are never reused, so a face that comes back after
  being lost is a new track (its buffer starts afresh); a hard cut in edited footage
  (:mod:`realtime.cuts`) or a gap in stream time ends every track. The limit is mainly stream time:
  counted in frames alone (10), a 50-ms dropout at 200 fps ended the track, and its new one
  waited a window to spot again; counted in time alone, one missed frame of a slow stream (a
  1-fps frame folder, a throttled browser tab) did.
* **a stabilised similarity alignment**: the spotter looks for motions of a pixel or less, so
  landmark jitter must not move the crop. Three rigid key points (the two eye centres and the
  nose tip) are smoothed per track with a One Euro filter and mapped by a least-squares
  similarity onto fixed template positions of an ``S x S`` crop framed from brows to chin.

The face model ships with the package (``realtime/models``) and is checked against its SHA-256
before loading; nothing is fetched at run time (docs/design.md, "Defaults and honesty").
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from fgsl.messages import first_line
from fgsl.signals import interrupts_deferred
from realtime.cuts import CutDetector
from realtime.types import FaceObservation, Frame, RealtimeError

MODEL_PATH = Path(__file__).resolve().parent / "models" / "face_landmarker.task"
#: SHA-256 of the bundled ``face_landmarker.task`` (see ``realtime/models/README.md``).
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"

#: MediaPipe's blendshape categories, in the order the model emits them (checked in the tests).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)

# Key points, as MediaPipe landmark indices. Each eye centre is the mean of the eye's two corners
# (canthi), which lie on MediaPipe's eye contour: the mean of the whole 16-point contour shifts
# by about 2.5 % of the eye distance when the lids close (measured on the shared videos), i.e.
# about 1 px in a 112 px crop at every blink, whereas the corners do not move with the lids.
# The subject's right eye is on the image left.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)
NOSE_TIP = 1

#: Where the key points land in the crop, as fractions of S: image-left eye, image-right eye,
#: nose tip. Eye distance 0.32 S and eye line at 0.30 S put the brows (about 0.45 eye distances
#: above the eye line) at about 0.16 S and the chin (about 1.9 below) at about 0.90 S, measured
#: on the shared videos; the nose tip sits about 0.63 eye distances below the eye line.
TEMPLATE = np.array([[0.34, 0.30], [0.66, 0.30], [0.50, 0.50]], dtype=np.float64)


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """``[3, 2]`` source-pixel key points (image-left eye, image-right eye, nose tip)."""
    xy = landmarks[:, :2].astype(np.float64)
    return np.stack(
        [xy[list(RIGHT_EYE_CORNERS)].mean(0), xy[list(LEFT_EYE_CORNERS)].mean(0), xy[NOSE_TIP]]
    )


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) ``src -> dst`` as 2x3.

    Closed form with points as complex numbers: minimising ``sum |a*p + t - q|^2`` over complex
    ``a`` and ``t`` gives ``a = sum(conj(p') q') / sum |p'|^2`` with centred ``p'``, ``q'``, and
    ``t = mean(q) - a mean(p)`` (Umeyama 1991 without reflection, in 2D).
    """
    p = src[:, 0] + 1j * src[:, 1]
    q = dst[:, 0] + 1j * dst[:, 1]
    pc, qc = p - p.mean(), q - q.mean()
    a = np.vdot(pc, qc) / max(float(np.vdot(pc, pc).real), 1e-12)
    t = q.mean() - a * p.mean()
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]], dtype=np.float64)


def align_transform(points: np.ndarray, crop_size: int) -> np.ndarray:
    """The 2x3 similarity that maps key points (:func:`key_points`) onto :data:`TEMPLATE`."""
    return similarity(points, TEMPLATE * crop_size)


def inside_mask(transform: np.ndarray, frame_size: tuple[int, int], crop_size: int) -> np.ndarray:
    """``[S, S]`` bool: which crop pixels show the frame (``transform`` maps frame pixels to
    the crop; ``frame_size`` is ``(width, height)``). The rest lies past the frame's edge and
    ``warpAffine`` fills it with black; a spotter must not read motion there, because that
    edge moves against the face whenever the head does."""
    inverse = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    coords = np.arange(crop_size, dtype=np.float64)
    x = inverse[0, 0] * coords[None, :] + inverse[0, 1] * coords[:, None] + inverse[0, 2]
    y = inverse[1, 0] * coords[None, :] + inverse[1, 1] * coords[:, None] + inverse[1, 2]
    width, height = frame_size
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


class OneEuroFilter:
    """One Euro filter (Casiez, Roussel & Vogel, "1 Euro Filter: A Simple Speed-based Low-pass
    Filter for Noisy Input in Interactive Systems", CHI 2012) on a vector of coordinates.

    A first-order low-pass whose cutoff rises with speed: ``fc = min_cutoff + beta * |dx/dt|``.
    At rest the low cutoff removes jitter; when the head moves the cutoff rises so the crop does
    not lag behind. Tuned as the paper advises: with ``beta = 0`` lower ``min_cutoff`` until a
    still face stops jittering, then raise ``beta`` until fast motion stops lagging;
    ``d_cutoff = 1 Hz`` for the speed estimate as in the paper. Two changes for a vector of
    points: one cutoff for all coordinates (so the points keep their shape), from the RMS
    point speed divided by ``scale`` (the eye distance): speed is in eye distances per second,
    so one ``beta`` fits near and far faces.

    Defaults (``min_cutoff = 0.5 Hz``, ``beta = 1``) were chosen on the shared videos (112 px
    crops): they cut the frame-to-frame second difference of the crop window (the jitter) 2.4x
    to 4.4x, while during head motion the crop stays on average 0.3 to 0.9 px from where the
    unsmoothed alignment would put it. ``tests/test_face.py`` measures both.
    """

    def __init__(self, min_cutoff: float = 0.5, beta: float = 1.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._dx is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t if t > self._t else 1e-3  # repeated/backward stamps: barely move
        self._t = max(t, self._t)
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        speed = float(np.sqrt(np.mean(self._dx.reshape(-1, 2) ** 2) * 2)) / max(scale, 1e-6)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()


@dataclass
class FaceUpdate:
    """What one :meth:`FaceTracker.process` call found: faces seen (by track id) and tracks that
    ended in this call. ``face_ms`` / ``align_ms``: time in MediaPipe vs. in matching,
    smoothing and cropping (the benchmark's stages "face" and "align")."""

    faces: list[FaceObservation] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    face_ms: float = 0.0
    align_ms: float = 0.0


@dataclass
class _Track:
    id: int
    box: tuple[float, float, float, float]
    filter: OneEuroFilter
    seen_s: float  # stream time of the last frame that showed it
    missed: int = 0  # frames in a row without it


def _close_failed(landmarker: Any) -> None:
    """Close a landmarker, also one whose graph has failed. Its ``close()`` then raises the graph's
    error before it lets go of the native task, and its ``__del__`` calls ``close()`` again at
    exit, when the modules are torn down: "Exception ignored ... TypeError" (seen with a
    bundle of the wrong models, mediapipe 1.2.3). So the rest of ``close()`` is done here:
    drop the handle (``__del__`` then does nothing), close the dispatcher and the library."""
    try:
        with interrupts_deferred():  # (its calls run in MediaPipe's worker thread, as detect's do)
            landmarker.close()
    except Exception:  # noqa: BLE001 - the graph's own error, said by the caller already
        landmarker._handle = None
        for part in (getattr(landmarker, "_dispatcher", None), getattr(landmarker, "_lib", None)):
            with contextlib.suppress(Exception):
                part.close()


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide MediaPipe's C++ start-up log lines (glog/TFLite write straight to fd 2, and no
    environment variable turns them off in mediapipe 1.2), so a user sees one clear line
    per problem instead of a screen of "W0000 ... feedback manager" notes."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # (2>&-: sys.stderr is None)
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (2>&-): nothing to hide the lines from
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def _match_score(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two boxes, or for disjoint-ish boxes a small score if the centres are within half
    a face size (a fast head can leave its previous box in one frame); 0 means no match."""
    iou = _iou(a, b)
    if iou > 0.1:
        return iou
    size = math.sqrt(max((a[2] - a[0]) * (a[3] - a[1]), 1.0))
    dist = math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    return 0.05 * (1.0 - dist / (0.5 * size)) if dist < 0.5 * size else 0.0


#: Shared libraries MediaPipe's native library links (``ldd libmediapipe.so``, mediapipe
#: 1.2.3) and the Debian/Ubuntu packages that hold them. Headless servers, GPU ones included,
#: often lack them (seen on the project's GPU machine: "libEGL.so.1: cannot open shared object file").
SYSTEM_LIBRARIES = {"libEGL.so.1": "libegl1", "libGLESv2.so.2": "libgles2", "libGLdispatch.so.0": "libglvnd0"}


def missing_library_hint(exc: OSError) -> str:
    """One line for a native-library load failure, naming the package to install when known."""
    text = first_line(exc)
    packages = [pkg for lib, pkg in SYSTEM_LIBRARIES.items() if lib in text]
    if packages:
        return f"{text} (Debian/Ubuntu: apt-get install {' '.join(packages)}; `make setup` installs them)"
    return text


#: Faces tracked at once unless asked otherwise (``realtime.cam --max-faces``).
DEFAULT_MAX_FACES = 4


#: Stream time (s) without its face after which a track ends (:class:`FaceTracker` ``lost_after_s``),
#: once it has also been missed in :data:`MIN_MISSED` frames in a row.
LOST_AFTER_S = 1 / 3
MIN_MISSED = 3

#: Stream-time gap (s) that ends every track (:class:`FaceTracker` ``max_gap_s``): well over a
#: frame period of any camera or data set (a 1-fps frame folder still keeps its tracks).
MAX_GAP_S = 1.5


class FaceTracker:
    """MediaPipe FaceLandmarker + track ids + stabilised alignment. Not thread-safe: one
    tracker per stream (MediaPipe's VIDEO mode keeps per-stream state).

    ``lost_after_s``: a track ends once its face has been missing for this long (stream time)
    and in :data:`MIN_MISSED` frames in a row.
    ``max_gap_s``: a longer gap in stream time (a camera outage and reconnect) ends every track:
    the face before and after it is not one continuous recording, and the buffers would fill
    the gap with copies of the last frame and spot all of them at once. A hard cut in edited
    footage ends every track too (:mod:`realtime.cuts`): the face after it may be another
    person's in the same place.
    ``min_cutoff`` / ``beta``: the One Euro filter on the key points (:class:`OneEuroFilter`).
    ``sha256``: the expected hash of a ``model_path`` of your own (``None``: not checked); the
    bundled model (no ``model_path``) is always checked against its recorded hash.
    """

    def __init__(
        self,
        max_faces: int = DEFAULT_MAX_FACES,
        crop_size: int = 112,
        model_path: str | Path | None = None,
        min_confidence: float = 0.5,
        lost_after_s: float = LOST_AFTER_S,
        min_cutoff: float = 0.5,
        beta: float = 1.0,
        sha256: str | None = None,
        max_gap_s: float = MAX_GAP_S,
    ) -> None:
        if max_faces < 1 or crop_size < 16 or not lost_after_s > 0 or not max_gap_s > 0:
            raise RealtimeError("FaceTracker needs max_faces >= 1, crop_size >= 16, "
                                "lost_after_s > 0, max_gap_s > 0")
        self.max_faces, self.crop_size, self.lost_after_s = max_faces, crop_size, lost_after_s
        self.max_gap_s = max_gap_s
        self._last_s: float | None = None  # stream time of the last frame processed
        self.min_cutoff, self.beta = min_cutoff, beta
        self.model_path = Path(model_path) if model_path is not None else MODEL_PATH
        self._landmarker = self._load(self.model_path, MODEL_SHA256 if model_path is None else sha256, min_confidence)
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._cuts = CutDetector()
        self._last_ms = 0  # _load's warm-up frame used timestamp 0

    def _load(self, path: Path, sha256: str | None, min_confidence: float) -> Any:
        if not path.is_file():
            shipped = path.resolve() == MODEL_PATH.resolve()
            raise RealtimeError(f"face model {path} is missing" + (" (it ships in realtime/models/: reinstall the package)"
                                                                  if shipped else ""))
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is not None and actual != sha256:
            raise RealtimeError(
                f"face model {path} is corrupt or not the expected model: sha256 "
                f"{actual[:16]}... != {sha256[:16]}... (see realtime/models/README.md)"
            )
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise RealtimeError(
                f"face tracking needs mediapipe ({exc}); reinstall the package (pip install -e .)"
            ) from exc
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=data),  # the bytes we just checked
            running_mode=vision.RunningMode.VIDEO,
            num_faces=self.max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True,
        )
        self._mp_image = lambda rgb: mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        landmarker = None
        try:
            with interrupts_deferred(), _native_stderr_silenced():
                landmarker = vision.FaceLandmarker.create_from_options(options)
                # The first inference logs TFLite set-up notes too: run it on a blank frame now.
                landmarker.detect_for_video(self._mp_image(np.zeros((64, 64, 3), np.uint8)), 0)
        except BaseException as exc:
            # A landmarker built but failing its first frame (a bundle of the wrong models), or
            # a Ctrl-C held until now: close it, or its __del__ prints a traceback at exit.
            if landmarker is not None:
                _close_failed(landmarker)
            if isinstance(exc, OSError):  # its native library did not load: a system library is missing
                raise RealtimeError(f"MediaPipe cannot start: {missing_library_hint(exc)}") from exc
            if isinstance(exc, Exception):  # MediaPipe raises RuntimeError / ValueError on a bad bundle
                raise RealtimeError(f"MediaPipe could not load face model {path}: {first_line(exc)}") from exc
            raise
        return landmarker

    # -- per frame ------------------------------------------------------------------------

    def process(self, frame: Frame) -> FaceUpdate:
        """Detect, track and align the faces of one frame (frames in stream order)."""
        if self._landmarker is None:
            raise RealtimeError("FaceTracker.process called after close()")
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise RealtimeError(f"frame {frame.index}: expected a BGR uint8 image, got "
                                f"{image.dtype} {image.shape}")
        t0 = time.perf_counter()
        all_ended = []  # (by a gap in stream time or a cut: every track at once)
        gap = self._last_s is not None and frame.timestamp - self._last_s > self.max_gap_s
        if self._cuts.is_cut(image) or gap:  # (always asked: it keeps the previous frame)
            all_ended, self._tracks = [t.id for t in self._tracks], []
        self._last_s = frame.timestamp
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        # VIDEO mode demands strictly increasing integer milliseconds; stream time may repeat
        # (a still image fed again) or round to the same ms, so force monotonic.
        ms = max(int(round(frame.timestamp * 1000.0)), self._last_ms + 1)
        self._last_ms = ms
        # Ctrl-C held for the call: MediaPipe runs it in a worker thread that writes into memory
        # this thread owns (the image, the result struct); a KeyboardInterrupt here freed that
        # memory under the worker, and the heap it corrupted crashed the close (SIGSEGV, 1 run in
        # about 10 of test_cam's Ctrl-C tests).
        with interrupts_deferred():
            result = self._landmarker.detect_for_video(self._mp_image(rgb), ms)
        t1 = time.perf_counter()
        update = self._track(frame, rgb, result)
        update.lost[:0] = all_ended
        t2 = time.perf_counter()
        update.face_ms, update.align_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        return update

    def _track(self, frame: Frame, rgb: np.ndarray, result: Any) -> FaceUpdate:
        """MediaPipe's result -> observations with track ids; ages and ends unseen tracks."""
        h, w = rgb.shape[:2]
        dets = []
        for i, lms in enumerate(result.face_landmarks):
            pts = np.array([(p.x * w, p.y * h, p.z) for p in lms], dtype=np.float32)
            shapes = np.zeros(len(BLENDSHAPE_NAMES), dtype=np.float32)
            if i < len(result.face_blendshapes):
                for c in result.face_blendshapes[i]:
                    shapes[c.index] = c.score
            box = (float(pts[:, 0].min()), float(pts[:, 1].min()),
                   float(pts[:, 0].max()), float(pts[:, 1].max()))
            dets.append((pts, shapes, box))

        # Greedy assignment, best score first: for a handful of faces that do not overlap it
        # picks what an optimal (Hungarian) assignment would, in a few lines.
        pairs = sorted(
            ((_match_score(t.box, d[2]), ti, di)
             for ti, t in enumerate(self._tracks) for di, d in enumerate(dets)),
            reverse=True,
        )
        assigned: dict[int, _Track] = {}
        used: set[int] = set()
        for score, ti, di in pairs:
            if score <= 0:
                break
            if ti not in used and di not in assigned:
                used.add(ti)
                assigned[di] = self._tracks[ti]

        update = FaceUpdate()
        for di, (pts, shapes, box) in enumerate(dets):
            track = assigned.get(di)
            if track is None:
                track = _Track(self._next_id, box, OneEuroFilter(self.min_cutoff, self.beta), frame.timestamp)
                self._next_id += 1
                self._tracks.append(track)
            track.box, track.seen_s, track.missed = box, frame.timestamp, 0
            raw = key_points(pts)
            eye_dist = float(np.linalg.norm(raw[1] - raw[0]))
            smooth = track.filter(raw.ravel(), frame.timestamp, scale=eye_dist).reshape(3, 2)
            matrix = align_transform(smooth, self.crop_size)
            crop = cv2.warpAffine(rgb, matrix, (self.crop_size, self.crop_size),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            update.faces.append(FaceObservation(
                track=track.id, index=frame.index, timestamp=frame.timestamp, landmarks=pts,
                blendshapes=shapes, transform=matrix.astype(np.float32), crop=crop, box=box,
                inside=inside_mask(matrix, (w, h), self.crop_size),
            ))
        update.faces.sort(key=lambda f: f.track)

        seen = {f.track for f in update.faces}
        live = []
        for track in self._tracks:
            if track.id not in seen:
                track.missed += 1
                # (1e-9: frame times i / fps do not add up exactly; 10 frames at 30 fps are 1/3 s)
                if track.missed >= MIN_MISSED and frame.timestamp - track.seen_s >= self.lost_after_s - 1e-9:
                    update.lost.append(track.id)
                    continue
            live.append(track)
        self._tracks = live
        return update

    def continue_ids(self, other: "FaceTracker") -> None:
        """Number new tracks after ``other``'s: this tracker takes over ``other``'s stream (the
        demo's new pipeline for new controls), and a track id is never reused within a stream."""
        self._next_id = max(self._next_id, other._next_id)

    # -- end ------------------------------------------------------------------------------

    @property
    def live_tracks(self) -> list[int]:
        """Ids of the tracks that have not ended (their face seen recently, see ``lost_after_s``)."""
        return [t.id for t in self._tracks]

    def close(self) -> list[int]:
        """End every live track (returned, for the buffers to flush) and release MediaPipe."""
        ended = [t.id for t in self._tracks]
        self._tracks = []
        if self._landmarker is not None:
            _close_failed(self._landmarker)  # (a graph that failed mid-run must not raise here)
            self._landmarker = None
        return ended

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
