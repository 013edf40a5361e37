"""Hard cuts in edited footage: the frame where one shot ends and the next begins.

An interview cut to the other speaker, a vlog's next take: the face in the same place of the
frame may be another person, or the same one a moment later. Box matching alone keeps one track
across the cut, and the spotter then reads the change of face as a movement (a review's cut
between two people: a score-1.0 "micro-expression" across the cut, and the second person's own
movement missed). :class:`FaceTracker` ends every track at a cut, as after a gap in stream time.

The test is PySceneDetect's content detector in its ``luma_only`` form (``ContentDetector``:
the mean absolute change of the HSV value channel between consecutive frames, a cut above its
default threshold of 27 on the 0-255 scale;
https://www.scenedetect.com/docs/latest/api/detectors.html), on a 160-px thumbnail (0.1 ms a
640x480 frame). Value only, because hue is noise wherever a pixel is dark or grey: with all
three channels a dim webcam's frames (or sensor noise of sigma 10 on a grey wall) changed by
up to 29 from one frame to the next, and nearly every frame was a "cut" (a review: 296 of 300
frames, nothing spotted); and a grayscale video (SAMM, an infrared camera) has no hue or
saturation to see a cut in. Measured here (``docs/realtime.md``): consecutive frames of the
shared face videos, also with noise, darkened or grey, change by at most 12.1; a cut between two
of them by 63-76, in colour or grey; a jump cut within one person's video by 9-28. In footage
a third as bright a cut changes value a third as much (about 20) and is not found: one track
runs through it, as before this test existed.

A black or blank frame (a camera starting, a glitch, a hand over the lens) is no shot of its
own: it is neither a cut nor what the next frame is compared with, so one black frame does not
end a track (the tracker's own rule for missed faces does, when they stay missed), and a cut
through black to another person is still found.
"""

from __future__ import annotations

import cv2
import numpy as np

#: PySceneDetect ``ContentDetector``'s default threshold (mean change, 0-255 scale).
CUT_THRESHOLD = 27.0
#: The thumbnail's longer side (px): enough to see a change of shot, a fraction of a ms to compare.
THUMBNAIL_PX = 160
#: A thumbnail whose brightness varies less than this (standard deviation, 0-255) is blank: a
#: black or uniform frame. Real frames measured here vary by 10 or more (a dark, noisy webcam
#: frame: 10.3), a face video's by 37-73.
BLANK_STD = 5.0


class CutDetector:
    """Says whether each frame (in stream order) starts a new shot."""

    def __init__(self, threshold: float = CUT_THRESHOLD) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None  # the last frame that was not blank

    def is_cut(self, image: np.ndarray) -> bool:
        """Whether ``image`` (BGR uint8) differs from the last frame that was not blank as a
        change of shot does; a change of frame size is one too. The first frame is not a cut,
        nor is a blank one."""
        current = _luma_thumbnail(image)
        if float(current.std()) < BLANK_STD:
            return False
        previous, self._previous = self._previous, current
        if previous is None:
            return False
        if previous.shape != current.shape:
            return True
        return content_change(previous, current) > self.threshold


def content_change(a: np.ndarray, b: np.ndarray) -> float:
    """The mean absolute change between two luma thumbnails (0-255)."""
    return float(cv2.mean(cv2.absdiff(a, b))[0])


def _luma_thumbnail(image: np.ndarray) -> np.ndarray:
    """The HSV value channel (the brightest of B, G, R) of a thumbnail of ``image``."""
    h, w = image.shape[:2]
    scale = min(1.0, THUMBNAIL_PX / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 2]
