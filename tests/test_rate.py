"""RecentRate: the fps the overlay and the demo show."""

from __future__ import annotations

import pytest

from realtime.rate import RecentRate


def test_the_rate_is_over_recent_frames_and_waits_for_a_second_of_them():
    rate = RecentRate()
    for i in range(10):  # a burst: 10 frames in 0.2 s, which would read as 45 fps
        rate.add(i * 0.02)
    assert rate.rate() is None
    for i in range(1, 31):  # then 30 fps for a second
        rate.add(0.18 + i / 30)
    assert rate.rate() == pytest.approx(39 / (0.18 + 1.0), rel=1e-6)  # (the last 40 frames, 1.18 s)
    for i in range(1, 121):  # then 10 fps for 12 s: the first second's frames are out of the window
        rate.add(1.18 + i / 10)
    assert rate.rate() == pytest.approx(10.0)
    later = RecentRate()
    later.extend(rate)  # a stream that goes on in a new session keeps its rate
    assert later.rate() == pytest.approx(10.0)
