"""How the live spotter's command lines end on Ctrl-C, SIGTERM and SIGHUP: cleanly.

Three moments need care: Python importing torch, OpenCV and MediaPipe (the first ~1.5 s;
:func:`fgsl.startup.startup_imports`, shared by every CLI, turns Ctrl-C into ``interrupted``;
SIGTERM and SIGHUP keep their default there and end the process before anything is opened), MediaPipe building its
landmarker (interrupted half-way it prints tracebacks at exit; both hold the signals with
:func:`fgsl.signals.interrupts_deferred`), and the run itself (SIGTERM and SIGHUP must finish
open events and close the ``--save`` video as Ctrl-C does, and a second Ctrl-C must not stop
that: :func:`interrupt_once`). This module imports nothing heavy: ``realtime.cam`` imports it
before its guarded imports.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fgsl.signals import TERMINATING, handled_signals, restore_handlers
from fgsl.startup import say

__all__ = ["STILL_FINISHING", "TERMINATING", "interrupt_once"]

#: What a Ctrl-C (or SIGTERM, SIGHUP) says while the run finishes after the first one.
STILL_FINISHING = "still finishing open events and closing files (Ctrl-\\ quits at once, losing them)"


#: Seconds after the first Ctrl-C (or SIGTERM, SIGHUP) in which later ones are held; one after
#: that interrupts again: the closing hangs, or the first KeyboardInterrupt was lost (raised
#: inside a ``__del__``, MediaPipe's ``Image.__del__`` among them, Python only prints it).
HOLD_S = 5.0


@contextmanager
def interrupt_once(names: tuple[str, ...] = ("SIGINT",), later: str | None = None,
                   hold_s: float = HOLD_S) -> Iterator[Callable[[], None]]:
    """The first of the signals ``names`` raises KeyboardInterrupt, as Ctrl-C does; later ones
    in the next ``hold_s`` seconds are held (``later``, where given, is said once) so that the
    closing the first one began runs to its end.

    * SIGTERM and SIGHUP among ``names`` (``kill``, ``timeout``, ``docker stop``, a closed
      terminal) end the run as Ctrl-C does: open events finished and written, the ``--save``
      video closed (killed outright, an mp4 has no index and does not play), the summary
      printed, the demo's sessions closed. Python's default for them stops the process on the
      spot. A signal someone set to be ignored (``nohup``) stays ignored.
    * Pressing Ctrl-C two or three times is common. The second one landed in the finishing
      (``realtime.cam``'s open events not yet written: lost), in the closing of the face
      tracker (MediaPipe's ``FaceLandmarker.__del__`` printed a traceback at exit) or in the
      demo's closing of its sessions. Ctrl-\\ (SIGQUIT) still ends a closing that hangs.
    * The hold is for :data:`HOLD_S` seconds, not for good: were the first KeyboardInterrupt
      lost, a live run could otherwise not be stopped by any later Ctrl-C.
    * What it yields, ``finishing()``, says that the run has ended by itself (the end of a
      file) and is finishing: from then on the first signal is held as a later one is (it
      came while the run was writing its last events, which it would have lost). One that
      comes :data:`HOLD_S` seconds after that held one interrupts: a finishing that hangs
      can still be stopped.

    Only the main thread may set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    first: list[float] = []  # when the signal that raised (or, finishing, the first held) came
    said: list[bool] = []
    ending: list[bool] = []  # finishing() was called

    def interrupt(signum: int, frame: object) -> None:
        now = time.monotonic()
        if ending and not first:
            first[:] = [now]
        if first and now - first[0] < hold_s:
            if later and not said:
                said.append(True)
                say(later)
            return
        first[:] = [now]
        raise KeyboardInterrupt

    previous: dict[signal.Signals, object] = {}
    try:
        for sig in handled_signals(names):
            previous[sig] = signal.getsignal(sig)  # first: a signal may come right after the next line
            signal.signal(sig, interrupt)
        yield lambda: ending.append(True)
    finally:
        restore_handlers(previous)
