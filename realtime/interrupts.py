"""How the live spotter's command lines end on Ctrl-C, SIGTERM and SIGHUP: cleanly, at any moment.

Three moments need care: Python importing torch, OpenCV and MediaPipe (the first ~1.5 s;
:func:`fgsl.startup.startup_imports`, shared by every CLI), MediaPipe building its
landmarker (interrupted half-way it prints tracebacks at exit), and the run itself (SIGTERM
and SIGHUP must finish open events and close the ``--save`` video as Ctrl-C does). This
module imports nothing heavy: ``realtime.cam`` imports it before its guarded imports.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TERMINATING = ("SIGTERM", "SIGHUP")  # what realtime.cam turns into Ctrl-C


def handled_signals(names: tuple[str, ...]) -> list[signal.Signals]:
    """The signals of ``names`` this system has and nobody set to be ignored (``nohup``
    ignores SIGHUP; a background job of a non-interactive shell ignores SIGINT)."""
    found = [getattr(signal, name, None) for name in names]
    return [sig for sig in found if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN]


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (``kill``, ``timeout``, ``docker stop``, a closed terminal) end the run
    as Ctrl-C does: open events finished and written, the ``--save`` video closed (killed
    outright, an mp4 has no index and does not play), the summary printed. Python's default
    for them stops the process on the spot. Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in handled_signals(TERMINATING)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM and SIGHUP, which ``realtime.cam`` turns into it) until the
    block is done: used while MediaPipe builds its landmarker, whose half-built objects,
    left to the garbage collector at exit, print tracebacks of their own (``Image.__del__``,
    ``FaceLandmarker.__del__``). A signal that came meanwhile is raised again right after, to
    the handlers there were before. (Blocking it with ``pthread_sigmask`` would not do: the
    kernel hands a process's signal to any thread not blocking it, MediaPipe's among them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    held = {sig: signal.signal(sig, lambda signum, frame: came.append(signum))
            for sig in handled_signals(("SIGINT", *TERMINATING))}
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        if came:
            signal.raise_signal(came[0])


#: What a Ctrl-C (or SIGTERM, SIGHUP) says while the run finishes after the first one.
STILL_FINISHING = "still finishing open events and closing files (Ctrl-\\ quits at once, losing them)"


@contextmanager
def later_interrupts_held() -> Iterator[Callable[[], None]]:
    """A ``hold()`` to call once the run has been interrupted: from then until the block ends,
    a further Ctrl-C, SIGTERM or SIGHUP says :data:`STILL_FINISHING` (once) instead of
    stopping the finishing half-way. Pressing Ctrl-C twice is common; the second one used to
    land in the finishing (open events not yet written: lost) or in torch's exit handlers (a
    traceback and a death by SIGINT). Ctrl-\\ (SIGQUIT) still ends a finishing that hangs."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous: dict[signal.Signals, object] = {}
    said: list[bool] = []

    def note(signum: int, frame: object) -> None:
        if not said:
            said.append(True)
            print(STILL_FINISHING, file=sys.stderr, flush=True)

    def hold() -> None:
        if not previous:
            previous.update({sig: signal.signal(sig, note) for sig in handled_signals(("SIGINT", *TERMINATING))})

    try:
        yield hold
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def quiet_exit(code: int) -> None:
    """End the program with ``code``, with Ctrl-C, SIGTERM and SIGHUP ignored while the
    interpreter shuts down: its exit handlers (torch's among them) printed a traceback and
    ended the process by the signal when a late Ctrl-C came then. The run's work is done."""
    for sig in handled_signals(("SIGINT", *TERMINATING)):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(code)
