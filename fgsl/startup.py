"""Ctrl-C while a ``python -m`` command line starts: ``interrupted`` (exit 130), not a traceback.

Every CLI of the project spends its first second or two importing torch (and OpenCV, ONNX
Runtime, MediaPipe, ...). Ctrl-C then is no bug, yet Python would print the traceback of the
import it stopped. Once ``main`` runs, :func:`fgsl.cli.run` ends a Ctrl-C with ``interrupted``
and status 130; the guards here end one during the imports the same way.

This module lives in :mod:`fgsl`, the bottom package (engines, calib, realtime and demo import
it, never the reverse), and imports nothing heavy, so that every package can guard its imports
with it. :mod:`fgsl.cli` cannot host it: it imports torch itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import NoReturn


#: The exit status of a command line ended by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def say(line: str) -> None:
    """``line`` on stderr, flushed, if stderr can take it. A status line is not worth the run:
    a closed terminal (SIGHUP, then EIO on every write), ``2>/dev/full`` or a closed stderr
    (``2>&-``: ``sys.stderr`` is None) made the print raise, and the open events that the run
    was about to finish and write to its files were lost."""
    if sys.stderr is None:  # (print's file=None would be stdout, among the event lines)
        return
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, RuntimeError):  # (a closed file object; a signal handler's line while
        pass  # the main thread was inside a write to stderr: "reentrant call")


def say_interrupted() -> int:
    """How every command line ends on Ctrl-C, during its imports (:func:`interrupted_quietly`)
    or its run (``fgsl.cli.run``): one ``interrupted`` line; returns the exit status."""
    say("interrupted")
    return INTERRUPTED



def quiet_exit(code: int) -> NoReturn:
    """End a command line with ``code``, with Ctrl-C ignored while the interpreter shuts down.
    Every ``python -m`` entry point ends with it: pressing Ctrl-C two or three times is
    common, and a late one landed in the exit handlers (torch's ``_del_library`` among them),
    which printed a traceback and ended the process by the signal (status -2) instead of the
    130 or 0 the run returned. The run's work is done. SIGTERM keeps its default, so that
    ``kill`` still ends a shutdown that hangs; off the main thread nothing is changed."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(code)


@contextmanager
def interrupted_quietly() -> Iterator[None]:
    """Ctrl-C inside ends the program as Ctrl-C during a run does (:func:`say_interrupted`),
    not with Python's traceback of the import it stopped. Modules guard their imports with
    :func:`startup_imports`, which calls it only when they start a command line."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(say_interrupted()) from None


def startup_imports(name: str) -> AbstractContextManager[None]:
    """:func:`interrupted_quietly` around a module's heavy imports while a command line of ours
    starts, else nothing. ``name`` is the module's ``__name__``. A command line starts when

    * the module is the program: ``__name__ == "__main__"`` (``python -m fgsl.infer``), or
    * ``python -m pkg.cli`` is still locating its module, i.e. importing the package ``pkg``
      (``python -m engines.build`` imports ``engines``, torch with it, before ``engines.build``
      runs). Python's docs (https://docs.python.org/3/using/cmdline.html#cmdoption-m): "If this
      option is given, the first element of sys.argv will be the full path to the module file
      (while the module file is being located, the first element will be set to "-m")." The
      module being located must be ``name`` or inside it (:func:`located_module`): ``python -m
      theirpkg``, whose ``__init__`` imports ``engines``, is their program, not ours.

    A program that imports the module (``import engines``, ``from fgsl.infer import ...``)
    keeps Python's own KeyboardInterrupt, to catch or not: no library turns it into an exit.
    (``python -c`` sets ``sys.argv[0]`` to ``-c``, a script to its path; an embedded
    interpreter may have no ``sys.argv`` at all.)"""
    argv = getattr(sys, "argv", None)
    locating = bool(argv) and argv[0] == "-m"
    target = located_module() if locating else None
    ours = target is None or target == name or target.startswith(name + ".")
    starting = name == "__main__" or (locating and ours)
    if starting:
        keep_stderr_open()
    return interrupted_quietly() if starting else nullcontext()


def keep_stderr_open() -> None:
    """A command line started with stderr closed (``2>&-``) gets stderr on /dev/null. Else the
    first file it opens takes descriptor 2, into which native libraries log (MediaPipe's
    glog, TFLite: an events file or a video would get their lines), and ``sys.stderr`` is
    None: ``print(file=None)`` writes to stdout among the results, and tqdm's bars raise."""
    try:
        os.fstat(2)
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != 2:
            os.dup2(null, 2)
            os.close(null)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the process's own stderr, never closed


def located_module() -> str | None:
    """The module ``python -m`` was given, from the interpreter's own command line
    (``sys.orig_argv``: ``-m NAME`` or ``-mNAME``), or None where it cannot be read there
    (options run together, ``-Bm NAME``): then every package being imported counts as ours."""
    args = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(args[1:], 1):
        if arg == "-m":
            return args[i + 1] if i + 1 < len(args) else None
        if arg.startswith("-m"):
            return arg[2:]
    return None
