"""Stand-ins for what cannot exist here: a physical webcam (served with real video frames)."""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np


class FakeCamera:
    """A camera serving ``frames`` (cycling) for ``fail_after`` reads, then failing forever."""

    def __init__(self, frames: list[np.ndarray], fail_after: int | None = None,
                 fps: float = 30.0, period_s: float = 0.0, opened: bool = True,
                 on_read: Callable[[int], None] | None = None, fails_as: str = "false") -> None:
        """``fails_as``: how a failed read looks, as drivers do it on unplug: ``"false"``
        (``(False, None)``), ``"raise"`` (``cv2.error``) or ``"empty"`` (``(True, 0x0 image)``)."""
        self.frames, self.fail_after, self.fps, self.fails_as = frames, fail_after, fps, fails_as
        self.period_s, self.opened, self.on_read = period_s, opened, on_read
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened and not self.released

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.period_s:
            time.sleep(self.period_s)
        if self.on_read is not None:
            self.on_read(self.reads)
        if self.released or (self.fail_after is not None and self.reads >= self.fail_after):
            if self.fails_as == "raise":
                raise cv2.error("camera unplugged")
            if self.fails_as == "empty":
                return True, np.empty((0, 0, 3), np.uint8)
            return False, None
        image = self.frames[self.reads % len(self.frames)]
        self.reads += 1
        return True, image

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released = True


def scripted_opener(*cameras: FakeCamera, on_open: Callable[[int], None] | None = None) -> Callable[[], FakeCamera]:
    """Hands out ``cameras`` in turn (the last one again once they run out); counts calls."""
    calls = {"n": 0}

    def opener() -> FakeCamera:
        n = calls["n"]
        calls["n"] += 1
        if on_open is not None:
            on_open(n)
        return cameras[min(n, len(cameras) - 1)]

    opener.calls = calls  # type: ignore[attr-defined]
    return opener
