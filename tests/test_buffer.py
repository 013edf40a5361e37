"""Per-track buffers: windows every stride, resampling to the model rate, clean ends, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.buffer import Buffers, TrackBuffer, crop_landmarks
from realtime.types import FaceObservation

IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


def face(index: int, fps: float, track: int = 0, transform: np.ndarray = IDENTITY) -> FaceObservation:
    crop = np.full((8, 8, 3), index % 256, np.uint8)  # the crop's value names its source frame
    marks = np.zeros((478, 3), np.float32)
    marks[:, 0], marks[:, 1] = index, 2 * index
    return FaceObservation(track, index, index / fps, marks, np.full(52, index, np.float32), transform, crop,
                           (0, 0, 1, 1))


def test_windows_every_stride_at_the_model_rate():
    buf = TrackBuffer(0, window=16, stride=4, fps=30)
    windows = [w for i in range(40) for w in buf.push(face(i, 30.0))]
    assert [w.start for w in windows] == [0, 4, 8, 12, 16, 20, 24]
    for w in windows:
        assert list(w.indices) == list(range(w.start, w.start + 16))
        assert np.array_equal(w.crops[:, 0, 0, 0], w.indices)  # each slot holds its own frame
        assert np.allclose(w.timestamps, w.indices / 30)
        assert w.blendshapes.shape == (16, 52) and w.landmarks.shape == (16, 478, 2)
        assert not w.final


def test_faster_source_is_decimated_and_slower_one_repeats_frames():
    fast = TrackBuffer(0, window=8, stride=8, fps=30)
    win = [w for i in range(40) for w in fast.push(face(i, 60.0))]
    assert list(win[0].indices) == list(range(0, 16, 2))  # 60 fps -> every other frame
    slow = TrackBuffer(0, window=8, stride=8, fps=30)
    win = [w for i in range(20) for w in slow.push(face(i, 12.0))]
    # model frame k (k/30 s) takes the source frame (j/12 s) nearest in time
    assert list(win[0].indices) == [0, 0, 1, 1, 2, 2, 2, 3]


def test_finish_covers_the_rest_and_pads_a_short_track():
    buf = TrackBuffer(0, window=16, stride=8, fps=30)
    windows = [w for i in range(27) for w in buf.push(face(i, 30.0))]
    assert [w.start for w in windows] == [0, 8]  # ends at frames 15 and 23
    last = buf.finish()
    assert last is not None and last.final and not last.repeats_last and list(last.indices) == list(range(11, 27))
    assert buf.finish() is None  # nothing left
    short = TrackBuffer(0, window=16, stride=8, fps=30)
    for i in range(5):
        assert short.push(face(i, 30.0)) == []
    last = short.finish()
    assert list(last.indices) == [0, 1, 2, 3, 4] + [4] * 11


def test_finish_after_an_exact_window_repeats_it_as_the_final_one():
    """The spotter examines a window's end only in the track's last window: a track whose
    last frame completed a regular window still gets a final one (the same frames)."""
    buf = TrackBuffer(0, window=8, stride=8, fps=30)
    regular = [w for i in range(16) for w in buf.push(face(i, 30.0))]
    assert len(regular) == 2 and not regular[-1].final
    last = buf.finish()
    assert last is not None and last.final and last.repeats_last and last.position == regular[-1].position
    assert list(last.indices) == list(regular[-1].indices) == list(range(8, 16))
    assert buf.finish() is None
    assert not any(w.repeats_last for w in regular)


def test_memory_is_bounded_by_the_window():
    buf = TrackBuffer(0, window=8, stride=2, fps=30)
    for i in range(500):
        buf.push(face(i, 30.0))
    assert len(buf._slots) == 8


def test_landmarks_reach_the_window_in_crop_coordinates():
    transform = np.array([[0.5, 0, 3], [0, 0.5, -1]], np.float32)
    obs = face(10, 30.0, transform=transform)
    marks = crop_landmarks(obs)
    assert np.allclose(marks[0], [0.5 * 10 + 3, 0.5 * 20 - 1])


def test_buffers_keep_tracks_apart_and_end_them():
    buffers = Buffers(window=4, stride=4, fps=30)
    out = []
    for i in range(6):
        out += buffers.push([face(i, 30.0, track=0), face(i, 30.0, track=7)])
    assert sorted(w.track for w in out) == [0, 7]
    ended = buffers.end([7])
    assert [w.track for w in ended] == [7] and ended[0].final and list(ended[0].indices) == [2, 3, 4, 5]
    assert buffers.tracks == [0]
    assert [w.track for w in buffers.end_all()] == [0] and buffers.tracks == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        TrackBuffer(0, window=0, stride=1, fps=30)
