"""Per-track sliding windows of aligned crops, resampled to the model's frame rate.

Each track gets a :class:`TrackBuffer`: a ring of the last ``window`` *model frames* (bounded
memory whatever the video length) that emits a :class:`~realtime.types.Window` every
``stride`` model frames once it is full. Model frame ``k`` of a track is the source frame
nearest in time to ``t0 + k / fps`` (``t0`` = the track's first timestamp), so a 25 fps
webcam, a 200 fps SAMM video and a 30 fps file all reach the spotter at ``config.fps``; a
camera that skips frames just repeats the nearest one. When a track ends (face lost, stream
over) :meth:`TrackBuffer.finish` emits one last window, ``final``: the last ``window`` model
frames (padded by repeating the last frame if the track was shorter than a window), also when
they are exactly the frames of the track's last regular window: a spotter may leave a
window's end to later windows (the flow spotter takes apexes near a window's end only in a
track's last window), and a track whose length happened to complete a regular window used to
lose the movements of its last half second (1 track end in 8 at the defaults).

:class:`Buffers` holds the buffers of all tracks and is what the pipeline talks to.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .types import FaceObservation, Window


@dataclass(frozen=True)
class _Slot:
    """One model frame: the source frame it came from and the data the spotters read."""

    index: int
    timestamp: float
    crop: np.ndarray
    landmarks: np.ndarray
    blendshapes: np.ndarray
    inside: np.ndarray | None


def crop_landmarks(face: FaceObservation) -> np.ndarray:
    """``[478, 2]`` landmark positions in the aligned crop (the smoothed transform applied)."""
    xy = face.landmarks[:, :2].astype(np.float32)
    return xy @ face.transform[:, :2].T.astype(np.float32) + face.transform[:, 2].astype(np.float32)


class TrackBuffer:
    """Model-rate ring of one track's crops; yields windows of ``window`` every ``stride``."""

    def __init__(self, track: int, window: int, stride: int, fps: float) -> None:
        if window < 1 or stride < 1 or fps <= 0:
            raise ValueError(f"window ({window}), stride ({stride}) and fps ({fps}) must be positive")
        self.track = track
        self.window = window
        self.stride = stride
        self.fps = fps
        self._slots: deque[_Slot] = deque(maxlen=window)
        self._t0: float | None = None
        self._produced = 0  # model frames produced so far
        self._regular_at = -1  # model frames produced when the last regular window was emitted
        self._last: _Slot | None = None

    def push(self, face: FaceObservation) -> list[Window]:
        """Add one observation; return the windows that became complete (usually 0 or 1)."""
        slot = _Slot(face.index, face.timestamp, face.crop, crop_landmarks(face), face.blendshapes, face.inside)
        if self._t0 is None:
            self._t0 = face.timestamp
        windows = []
        # Model frames whose time lies before this observation: nearest of (last, this).
        while True:
            due = self._t0 + self._produced / self.fps
            if due > face.timestamp + 1e-9:
                break
            take = slot
            if self._last is not None and due - self._last.timestamp < face.timestamp - due:
                take = self._last
            self._slots.append(take)
            self._produced += 1
            if self._produced >= self.window and (self._produced - self.window) % self.stride == 0:
                windows.append(self._emit(final=False))
                self._regular_at = self._produced
        self._last = slot
        return windows

    def finish(self) -> Window | None:
        """The track's last window (``None`` once finished, or for a track with no frame); the
        buffer is then empty."""
        if not self._slots:
            return None
        window = self._emit(final=True)
        self._slots.clear()
        return window

    def _emit(self, final: bool) -> Window:
        slots = list(self._slots)
        position = self._produced - len(slots)
        if len(slots) < self.window:
            slots += [slots[-1]] * (self.window - len(slots))
        return Window(
            track=self.track,
            indices=np.array([s.index for s in slots], np.int64),
            timestamps=np.array([s.timestamp for s in slots], np.float64),
            crops=np.stack([s.crop for s in slots]),
            landmarks=np.stack([s.landmarks for s in slots]),
            blendshapes=np.stack([s.blendshapes for s in slots]),
            final=final,
            position=position,
            inside=None if any(s.inside is None for s in slots) else np.stack([s.inside for s in slots]),
            repeats_last=final and self._regular_at == self._produced,
        )


class Buffers:
    """The buffers of all live tracks (created on a track's first face, dropped when it ends)."""

    def __init__(self, window: int, stride: int, fps: float) -> None:
        self.window, self.stride, self.fps = window, stride, fps
        self._tracks: dict[int, TrackBuffer] = {}

    def push(self, faces: list[FaceObservation]) -> list[Window]:
        windows: list[Window] = []
        for face in faces:
            buffer = self._tracks.get(face.track)
            if buffer is None:
                buffer = self._tracks[face.track] = TrackBuffer(face.track, self.window, self.stride, self.fps)
            windows += buffer.push(face)
        return windows

    def end(self, tracks: list[int]) -> list[Window]:
        """Finish and drop the buffers of ``tracks``; return their last windows."""
        windows = []
        for track in tracks:
            buffer = self._tracks.pop(track, None)
            if buffer is not None and (window := buffer.finish()) is not None:
                windows.append(window)
        return windows

    def end_all(self) -> list[Window]:
        return self.end(list(self._tracks))

    @property
    def tracks(self) -> list[int]:
        return list(self._tracks)
