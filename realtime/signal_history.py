"""Each track's motion signal over time, kept from the spotter's per-window signals.

The flow spotter publishes only its latest window's signal per track
(:meth:`realtime.spotters.base.Spotter.signals`: source frames and values), recomputed for
every window; a plot of one window shows a fraction of a second, frozen for a stride and then
replaced. :class:`SignalHistory` joins the windows into one series per track (windows
overlap, so the newest value of a frame wins), for the overlay's live plot and the demo's
plots alike.
"""

from __future__ import annotations

import math
from itertools import islice

import numpy as np

from .spotters.base import Spotter


class SignalHistory:
    """Each track's motion signal by source frame, as the spotter last computed it.

    ``max_frames`` bounds each track (oldest frames go first), ``max_tracks`` the number of
    tracks kept (tracks not updated for longest go first); ``None`` keeps everything (an
    uploaded file, whose length the upload limit bounds). Spotters without a signal (FGSL)
    leave it empty.
    """

    def __init__(self, max_frames: int | None = None, max_tracks: int | None = None) -> None:
        self.max_frames, self.max_tracks = max_frames, max_tracks
        self._tracks: dict[int, dict[int, float]] = {}

    def update(self, spotter: Spotter) -> None:
        for track, (indices, values) in spotter.signals().items():
            series = self._tracks.pop(int(track), {})
            self._tracks[int(track)] = series  # most recently updated last
            for index, value in zip(np.asarray(indices).tolist(), np.asarray(values, np.float64).tolist()):
                series[int(index)] = float(value) if math.isfinite(value) else 0.0
            if self.max_frames is not None and len(series) > self.max_frames:
                for index in sorted(series)[: len(series) - self.max_frames]:
                    del series[index]
        if self.max_tracks is not None:
            while len(self._tracks) > self.max_tracks:
                del self._tracks[next(iter(self._tracks))]

    def series(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per track: sorted source frames and their values."""
        out = {}
        for track, series in sorted(self._tracks.items()):
            if series:
                idx = np.array(sorted(series), np.int64)
                out[track] = (idx, np.array([series[i] for i in idx.tolist()], np.float64))
        return out

    def recent(self, samples: int) -> dict[int, np.ndarray]:
        """Per track, the values of its last ``samples`` frames, oldest first (what the overlay
        plots each frame: the cost does not grow with a long upload's history). Windows move
        forward, so a track's frames arrive in order and the last ones inserted are the latest."""
        out = {}
        for track, series in self._tracks.items():
            last = sorted(islice(reversed(series), samples))
            if last:
                out[track] = np.array([series[i] for i in last], np.float64)
        return out

    def __len__(self) -> int:
        return sum(len(s) for s in self._tracks.values())
