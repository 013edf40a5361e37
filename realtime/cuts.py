"""Hard cuts in edited footage: the frame where one shot ends and the next begins.

An interview cut to the other speaker, a vlog's next take: the face in the same place of the
frame may be another person, or the same one a moment later. Box matching alone keeps one track
across the cut, and the spotter then reads the change of face as a movement (a review's cut
between two people: a score-1.0 "micro-expression" across the cut, and the second person's own
movement missed). :class:`FaceTracker` ends every track at a cut, as after a gap in stream time.

The test is PySceneDetect's content detector (``ContentDetector``, defaults: the mean absolute
change of hue, saturation and value between consecutive frames, each weighted 1, a cut above
27 on the 0-255 scale; https://www.scenedetect.com/docs/latest/api/detectors.html), on a
160-px thumbnail (bilinear: 0.15 ms a 640x480 frame, a third of an area average's cost, the
same values within 0.5). Measured on this project's videos (``docs/realtime.md``): consecutive
frames of the shared face videos, talking and pulling faces, change by at most 8.1; a cut
between two of them by 34.6-35.3; a jump cut within one person's video by 8.6-21.5, below the
threshold: the same face in the same place before and after, which the tracker rightly follows
as one.
"""

from __future__ import annotations

import cv2
import numpy as np

#: PySceneDetect ``ContentDetector``'s default threshold (mean HSV change, 0-255 scale).
CUT_THRESHOLD = 27.0
#: The thumbnail's longer side (px): enough to see a change of shot, a fraction of a ms to compare.
THUMBNAIL_PX = 160


class CutDetector:
    """Says whether each frame (in stream order) starts a new shot."""

    def __init__(self, threshold: float = CUT_THRESHOLD) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def is_cut(self, image: np.ndarray) -> bool:
        """Whether ``image`` (BGR uint8) differs from the previous frame as a change of shot
        does; a change of frame size is one too. The first frame is not a cut."""
        current = _hsv_thumbnail(image)
        previous, self._previous = self._previous, current
        if previous is None:
            return False
        if previous.shape != current.shape:
            return True
        return content_change(previous, current) > self.threshold


def content_change(a: np.ndarray, b: np.ndarray) -> float:
    """The mean absolute change over pixels and the three HSV channels (0-255)."""
    return float(np.mean(cv2.mean(cv2.absdiff(a, b))[:3]))


def _hsv_thumbnail(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, THUMBNAIL_PX / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
