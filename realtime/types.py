"""The records that flow through the live spotter, one per stage (see docs/design.md, "Contracts").

capture -> :class:`Frame` -> face -> :class:`FaceObservation` -> buffer -> :class:`Window`
-> spotter -> :class:`Candidate` -> events -> :class:`Event` -> sinks.

Times: ``timestamp`` is *stream time* in seconds: ``index / fps`` for files and image folders
(so event times match the video's own clock), seconds since the capture started for live
cameras. ``captured`` is ``time.monotonic()`` when the frame was read, used only to measure
latency. Frame numbers are 0-based indices of the source's own frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fgsl.config import MEGC_CLASSES


class RealtimeError(ValueError):
    """Bad input to the live spotter (camera, file, model file, flags): one clear line."""


@dataclass(frozen=True)
class Frame:
    """One source frame: 0-based index, stream time (s), capture time, BGR uint8 image."""

    index: int
    timestamp: float
    captured: float
    image: np.ndarray


@dataclass(frozen=True)
class FaceObservation:
    """One tracked face in one frame.

    ``landmarks``: ``[478, 3]`` float32, x and y in source pixels, z in MediaPipe's relative
    units. ``blendshapes``: ``[52]`` float32 in MediaPipe's category order
    (:data:`realtime.face.BLENDSHAPE_NAMES`). ``transform``: the smoothed ``2x3`` similarity
    that maps source pixels to the aligned crop. ``crop``: RGB uint8 ``[S, S, 3]``. ``box``:
    ``(x0, y0, x1, y1)`` of the landmarks in source pixels. ``inside``: ``[S, S]`` bool, the
    crop pixels that show the frame (the rest lies past its edge); ``None``: all of them.
    """

    track: int
    index: int
    timestamp: float
    landmarks: np.ndarray
    blendshapes: np.ndarray
    transform: np.ndarray
    crop: np.ndarray
    box: tuple[float, float, float, float]
    inside: np.ndarray | None = None


@dataclass(frozen=True)
class Window:
    """T aligned crops of one track, resampled to the model fps.

    ``indices[i]`` and ``timestamps[i]`` are the source frame (and its stream time) that
    model frame ``i`` was taken from; ``crops`` is ``[T, S, S, 3]`` RGB uint8,
    ``landmarks`` ``[T, 478, 2]`` float32 in crop pixels and ``blendshapes`` ``[T, 52]``. ``final`` marks the last window of a track (face lost or
    stream ended): it may repeat frames at its end when the track was shorter than T.
    ``position`` is the track's model-frame number of the window's first frame (windows of a
    track start at 0, stride, 2 x stride, ...; a final window anywhere): the FGSL spotter
    keys its per-chunk encoder cache by it. ``inside`` is ``[T, S, S]`` bool, the crop pixels
    that show the frame (:attr:`FaceObservation.inside`); ``None``: all of them.
    ``repeats_last`` marks a final window over exactly the frames of the track's last regular
    window (the track's length completed that one): a spotter that left that window's end to
    a later one needs it, one that sees whole windows has seen it (:mod:`realtime.buffer`).
    """

    track: int
    indices: np.ndarray
    timestamps: np.ndarray
    crops: np.ndarray
    landmarks: np.ndarray
    blendshapes: np.ndarray
    final: bool = False
    position: int = 0
    inside: np.ndarray | None = None
    repeats_last: bool = False

    @property
    def start(self) -> int:
        return int(self.indices[0])

    @property
    def end(self) -> int:
        return int(self.indices[-1])


@dataclass(frozen=True)
class Candidate:
    """One spotted movement in one window (source frame numbers and stream times)."""

    track: int
    onset: int
    apex: int
    offset: int
    onset_s: float
    apex_s: float
    offset_s: float
    label: str
    score: float
    kind: str = "micro"  # "micro" (0.065-0.5 s) or "macro"


@dataclass(frozen=True)
class Event:
    """A final, merged movement as the sinks receive it (the JSONL schema)."""

    track: int
    onset: int
    apex: int
    offset: int
    onset_s: float
    offset_s: float
    label: str
    score: float
    spotter: str
    emitted_s: float
    kind: str = "micro"

    @property
    def delay_s(self) -> float:
        """Stream time between the movement's offset and its emission."""
        return self.emitted_s - self.offset_s

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["delay_s"] = round(self.delay_s, 4)
        for key in ("onset_s", "offset_s", "emitted_s", "score"):
            out[key] = round(float(out[key]), 4)
        return out


#: Keys every event line carries (docs/design.md), checked by :func:`validate_event_line`.
EVENT_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "track": int,
    "onset": int,
    "apex": int,
    "offset": int,
    "onset_s": (int, float),
    "offset_s": (int, float),
    "label": str,
    "score": (int, float),
    "spotter": str,
    "emitted_s": (int, float),
    "delay_s": (int, float),
    "kind": str,
}
LABELS = MEGC_CLASSES  # the emotion of every event: the MEGC classes FGSL is trained on
#: The spotters that emit events (``realtime/spotters/``).
SPOTTERS = ("flow", "fgsl")

#: A micro-expression lasts at most this long (onset to offset); longer movements are
#: ``macro``. The common definition of CAS(ME)^2 and SAMM (under 0.5 s).
MICRO_MAX_S = 0.5
#: Shorter than this is a one-frame glitch, not a facial movement (docs/design.md: ME = 0.065-0.5 s).
MIN_MOVEMENT_S = 0.065


def too_short(frames: int, fps: float) -> str | None:
    """Why a whole recording of ``frames`` at ``fps`` is too short to spot anything in (one
    frame: an image given as a video), or ``None``. Its "0 events" would otherwise read as
    "nothing happened" when nothing could be seen: a movement lasts up to ``MICRO_MAX_S``."""
    seconds = frames / fps
    if seconds >= MICRO_MAX_S:
        return None
    return (f"{frames} frame{'' if frames == 1 else 's'} ({seconds:.2f} s) is too short to spot in: a "
            f"micro-expression lasts up to {MICRO_MAX_S:g} s")


def validate_event_line(obj: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first way ``obj`` breaks the event schema."""
    for key, kind in EVENT_SCHEMA.items():
        if key not in obj:
            raise ValueError(f"event lacks {key!r}")
        if isinstance(obj[key], bool) or not isinstance(obj[key], kind):
            raise ValueError(f"event field {key!r} has type {type(obj[key]).__name__}")
    extra = set(obj) - set(EVENT_SCHEMA)
    if extra - {"untrained"} or obj.get("untrained", True) is not True:
        raise ValueError(f"event has keys outside the schema: {sorted(extra)} (only \"untrained\": true may be added)")
    if obj["track"] < 0 or obj["onset"] < 0:
        raise ValueError("event needs a track id and frames of 0 or more")
    if not obj["onset"] <= obj["apex"] <= obj["offset"]:
        raise ValueError("event needs onset <= apex <= offset")
    if not obj["onset_s"] <= obj["offset_s"] <= obj["emitted_s"]:
        raise ValueError("event needs onset_s <= offset_s <= emitted_s")
    # Both sides are rounded to 4 decimals on output (Event.to_json).
    if abs(obj["delay_s"] - (obj["emitted_s"] - obj["offset_s"])) > 2e-4:
        raise ValueError("event delay_s is not emitted_s - offset_s")
    if not 0 <= obj["score"] <= 1:
        raise ValueError(f"event score {obj['score']} is not in [0, 1]")
    if obj["label"] not in LABELS:
        raise ValueError(f"event label {obj['label']!r} is not one of {LABELS}")
    if obj["kind"] not in ("micro", "macro"):
        raise ValueError(f"event kind {obj['kind']!r} is not micro or macro")
    if obj["spotter"] not in SPOTTERS:
        raise ValueError(f"event spotter {obj['spotter']!r} is not one of {SPOTTERS}")
