"""Frames per second over the last few seconds, as the overlay and the demo's stats show it.

An average since the start hides a slowdown late in a session, and a rate over the first few
frames is noise: over its first frames a browser's send jitter read as 34-35 frames/s from a
page that sends at most 25. So the rate is over the last ``count`` frames within ``window_s``
seconds, and there is none until those span ``min_span_s``.
"""

from __future__ import annotations

from collections import deque


class RecentRate:
    """Arrival times in, frames per second out (see the module docstring)."""

    def __init__(self, count: int = 60, window_s: float = 5.0, min_span_s: float = 1.0) -> None:
        self.window_s, self.min_span_s = window_s, min_span_s
        self._times: deque[float] = deque(maxlen=count)

    def add(self, t: float) -> None:
        """One frame arrived at ``t`` (seconds on any monotonic clock)."""
        self._times.append(t)

    def extend(self, other: "RecentRate") -> None:
        """Carry on from ``other``'s arrivals (a stream that continues in a new session)."""
        self._times.extend(other._times)

    def rate(self) -> float | None:
        """Frames per second over the recent arrivals, or None until they span ``min_span_s``."""
        if len(self._times) < 2:
            return None
        now = self._times[-1]
        recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2 or recent[-1] - recent[0] < self.min_span_s:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])
