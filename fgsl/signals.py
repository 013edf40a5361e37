"""Holding Ctrl-C (and SIGTERM, SIGHUP) while native code runs that must not see it.

A KeyboardInterrupt raised while a native module initialises is not always a
KeyboardInterrupt by the time it reaches us: pybind11 turns it into ``ImportError:
initialization failed``, and whoever catches ImportError takes the package for broken or
missing. Seen here with ONNX Runtime: Ctrl-C while ``fgsl.infer`` imported it (the engine's
first use) made ``--backend auto`` fall back to torch and run to the end, exit 0
(:func:`fgsl.cli.missing_module` now imports with the signals held). And MediaPipe's
half-built landmarker, left to the garbage collector at exit, prints tracebacks of its own
(:class:`realtime.face.FaceTracker`). Such code runs under :func:`interrupts_deferred`, and a
signal that came meanwhile is raised right after, where Python code sees it.

This module lives in :mod:`fgsl`, the bottom package, and imports nothing heavy:
:mod:`fgsl.cli` uses it, and :mod:`realtime.interrupts` builds on it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TERMINATING = ("SIGTERM", "SIGHUP")  # what realtime.cam and the demo turn into Ctrl-C


def handled_signals(names: tuple[str, ...]) -> list[signal.Signals]:
    """The signals of ``names`` this system has and nobody set to be ignored (``nohup``
    ignores SIGHUP; a background job of a non-interactive shell ignores SIGINT)."""
    found = [getattr(signal, name, None) for name in names]
    return [sig for sig in found if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN]


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM and SIGHUP) until the block is done; a signal that came
    meanwhile is raised again right after, to the handlers there were before. (Blocking it
    with ``pthread_sigmask`` would not do: the kernel hands a process's signal to any thread
    not blocking it, MediaPipe's among them.) Only the main thread may set handlers; elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in handled_signals(("SIGINT", *TERMINATING)):
            previous[sig] = signal.getsignal(sig)  # first: a signal may come right after the next line
            signal.signal(sig, lambda signum, frame: came.append(signum))
        yield
    finally:
        restore_handlers(previous)
        if came:
            signal.raise_signal(came[0])


def restore_handlers(previous: dict[signal.Signals, Any]) -> None:
    """Put the handlers of ``previous`` back, every one of them even when a handler put back
    raises at once (Ctrl-C arriving mid-way): SIGTERM was otherwise left held for good, and
    ``docker stop`` did nothing. (Signal masks cannot help: Python runs its handlers in the
    main thread whichever thread the kernel hands the signal to.)"""
    items = list(previous.items())

    def restore(index: int) -> None:
        if index < len(items):
            try:
                signal.signal(*items[index])
            finally:
                restore(index + 1)

    restore(0)
