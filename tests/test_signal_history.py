"""SignalHistory: the spotter's per-window signals joined into one series per track."""

from __future__ import annotations

import numpy as np

from realtime.signal_history import SignalHistory


class Windows:
    """What a spotter publishes: its latest window's (source frames, values) per track."""

    def __init__(self) -> None:
        self.latest: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def signals(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return dict(self.latest)


def test_overlapping_windows_join_with_the_newest_value_of_each_frame():
    spotter, history = Windows(), SignalHistory(max_frames=20, max_tracks=2)
    for start in range(0, 40, 8):  # windows of 16 frames every 8: each frame seen twice
        frames = np.arange(start, start + 16)
        spotter.latest = {0: (frames, frames + start / 100), 1: (frames, -frames.astype(float))}
        history.update(spotter)
    idx, values = history.series()[0]
    assert idx.tolist() == list(range(28, 48))  # bounded: the last 20 frames
    assert values.tolist() == [f + (32 / 100 if f >= 32 else 24 / 100) for f in range(28, 48)]  # newest wins
    recent = history.recent(5)
    assert recent[0].tolist() == values[-5:].tolist() and recent[1].tolist() == [-43.0, -44.0, -45.0, -46.0, -47.0]
    spotter.latest = {2: (np.arange(3), np.array([np.nan, np.inf, 1.0]))}
    history.update(spotter)
    assert sorted(history.recent(5)) == [1, 2] and history.recent(5)[2].tolist() == [0.0, 0.0, 1.0]  # track 0 dropped
