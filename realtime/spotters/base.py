"""The one protocol every spotter follows, and the rule for when its candidates are final.

A spotter sees one :class:`~realtime.types.Window` at a time and returns the movements it
found in it as :class:`~realtime.types.Candidate`s. Windows of a track overlap (a new one
every ``stride`` model frames), so the same movement is usually reported by several windows;
:mod:`realtime.events` merges those. For that it must know when no later window can still
report a movement: :meth:`Spotter.final_before` gives, for the window just processed, the
source frame before which every candidate of every *later* window of that track will lie
after — events that end before it are final.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..types import Candidate, Window


class Spotter(Protocol):
    """``process(window) -> candidates``; windows of ``window`` model frames every ``stride``.

    ``crop_size``: the aligned face crop it wants from the tracker (px). ``merge_gap_s``:
    candidates closer than this are one movement (:class:`~realtime.events.EventMerger`).
    ``trained``: whether its weights were trained (``None``: it has none, or it cannot tell).
    """

    name: str
    window: int
    stride: int
    fps: float
    crop_size: int
    merge_gap_s: float
    trained: bool | None

    def describe(self) -> str:
        """One line for the start of a run: what spots, with which weights, and caveats."""
        ...

    def signals(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The latest window's motion signal per track, as (source frames, values), for plots
        and overlays; empty for a spotter without one."""
        ...

    def signal_threshold(self) -> float | None:
        """The level :meth:`signals` must cross to make a movement, or ``None``."""
        ...

    def process(self, windows: list[Window]) -> list[list[Candidate]]:
        """Candidates of each window (one list per window; a batch may mix tracks)."""
        ...

    def final_before(self, window: Window) -> int:
        """Source frame before which later windows of this track report nothing new."""
        ...

    def end_track(self, track: int) -> None:
        """Forget a track's state (face lost or stream over)."""
        ...


def next_window_start(window: Window, stride: int) -> int:
    """Source frame where the next window of this track starts (end of stream: past the end)."""
    if window.final or stride >= len(window.indices):
        return int(window.indices[-1]) + 1
    return int(window.indices[stride])
