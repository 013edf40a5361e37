"""Shared command-line plumbing: one clear error line instead of a traceback.

Every CLI of the project wraps its ``main`` with :func:`run`, so a bad file, a bad flag
value or a mismatched weights folder prints ``error: <reason>`` on stderr and exits with
status 2. Unexpected exceptions still show a traceback: those are bugs to report.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .backbone import CheckpointError
from .config import MAX_FPS, MIN_FPS, ConfigError, is_score_threshold
from .data.frames import VideoError
from .data.table import AnnotationError
from .messages import explain, first_line
from .model import InputShapeError
from .startup import say, say_interrupted
from .weights import WeightsError


class UsageError(ValueError):
    """A bad combination of command-line arguments or inputs."""


#: How pathlib (before Python 3.13) words a symbolic link that points at itself, in a RuntimeError.
SYMLINK_LOOP = "Symlink loop from "

#: Errors that describe bad input, not bugs: reported in one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    ConfigError,
    CheckpointError,
    WeightsError,
    InputShapeError,
    VideoError,
    AnnotationError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with the project's error line: a bad or missing flag is one
    ``error: argument --batch: must be at least 1, got '0'`` line and exit status 2, as every
    other bad input is (:func:`run`). argparse's own prints the whole usage first (fifteen
    lines for ``fgsl.train``) above ``PROG: error: ...``; ``--help`` still lists every flag."""

    def error(self, message: str) -> Any:  # (argparse's signature says NoReturn; it exits)
        self.exit(2, f"error: {message}\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        """An option given an empty value is refused, for every flag of every command: it is
        an unset shell variable far more often than a choice (``--events "$OUT"``), and it
        was taken as "not given" (nothing written, the bundled sample benchmarked, the flow
        spotter for ``--weights ''``) or as the current folder. (argparse calls this for
        each option with the strings given, before their ``type``.)"""
        if action.option_strings and "" in arg_strings:  # (a blank one is left to the flag's own type)
            self.error(f"argument {'/'.join(action.option_strings)}: empty value (an unset shell variable?)")
        return super()._get_values(action, arg_strings)


def first_flag_given(args: argparse.Namespace,
                     *adders: Callable[[argparse.ArgumentParser], None]) -> str | None:
    """The first flag the ``adders`` define (functions adding flags to a parser) that ``args``
    sets to a value other than its default, as ``--flag``, or None. For flags that only some
    mode reads (the FGSL spotter's, ``--synthetic``'s recipe): given in another mode, they
    would be ignored without a word. The defaults are read from a parser the flags are added
    to, so they are written once, where the flags are defined."""
    probe = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(probe)
    for dest, default in vars(probe.parse_args([])).items():
        if getattr(args, dest, default) != default:
            return "--" + dest.replace("_", "-")
    return None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already says its default, or
    there is none to say (``None``, ``False``): else ``--help`` reads "(default 0 when no
    --source) (default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action) or text


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """argparse ``type`` for a float flag that must be > 0 (rejects 0, negatives, nan, inf)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def number_between(lowest: float, highest: float) -> Callable[[str], float]:
    """argparse ``type`` for a float flag with a range: values far outside it are no setting
    anyone means, and would fail much later as a hang or a memory error (``--fps 1e-300``
    asks for 1e302 model frames of a 3-s video)."""

    def parse(text: str) -> float:
        value = _finite(text)
        if not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(f"must be from {lowest:g} to {highest:g}, got {text!r}")
        return value

    parse.__name__ = f"number_between({lowest:g}, {highest:g})"
    return parse


#: argparse ``type`` for ``--fps`` (:data:`fgsl.config.MIN_FPS` to :data:`fgsl.config.MAX_FPS`).
frame_rate = number_between(MIN_FPS, MAX_FPS)


def subject_name(text: str) -> str:
    """argparse ``type`` for ``--subject``: a CSV's subject column, which ``fgsl.evaluate``
    reads with the spaces around it stripped and refuses when that leaves nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a subject, got {text!r}")
    return text.strip()


def score_threshold(text: str) -> float:
    """argparse ``type`` for a score threshold (:func:`fgsl.config.is_score_threshold`: [0, 1))."""
    try:
        value = _finite(text)
    except argparse.ArgumentTypeError:  # one message for every bad threshold
        value = math.nan
    if not is_score_threshold(value):
        raise argparse.ArgumentTypeError(f"must be a score in [0, 1), got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    """argparse ``type`` for a float flag that must be >= 0 (0 usually meaning "off")."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def at_least(lowest: int, most: int | None = None) -> Callable[[str], int]:
    """argparse ``type`` for a whole-number flag that must be >= ``lowest`` (and <= ``most``
    where a larger value can only exhaust memory), e.g. ``type=at_least(0)``.

    A bad value then fails in argparse, before any work and in argparse's own words
    (``error: argument --batch: must be at least 1, got '0'``), the same way
    :func:`positive_number` refuses a bad float, instead of a hand-written check in every
    command's ``body()``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {text!r}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {text!r}")
        return value

    parse.__name__ = f"at_least({lowest})"  # what argparse would name in an "invalid ... value" line
    return parse


#: argparse ``type`` for a count that must be 1 or more (``--batch``, ``--epochs``).
positive_int = at_least(1)


def register_user_error(*kinds: type[BaseException]) -> None:
    """Let another package (engines, realtime) add its own bad-input error types."""
    global USER_ERRORS
    USER_ERRORS = USER_ERRORS + tuple(k for k in kinds if k not in USER_ERRORS)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as one ``warning: ...`` line (Python's default adds the file, line and source),
    through tqdm so that it does not land on the line of a progress bar being drawn."""
    from tqdm import tqdm

    stream = file or sys.stderr
    if stream is None:  # 2>&-: tqdm would write to stdout, among the results
        return
    try:
        tqdm.write(f"warning: {first_line(message) if isinstance(message, BaseException) else message}", file=stream)
    except (OSError, ValueError):  # stderr gone (a closed terminal): the run goes on (fgsl.startup.say)
        pass


def add_source_fps_flag(parser: argparse.ArgumentParser) -> None:
    """``--fps`` for commands that read videos or frame folders (infer, tune, calib.collect): one
    meaning everywhere, so a video lands on the same model frames in each."""
    parser.add_argument("--fps", type=frame_rate,
                        help=f"frame rate of the sources ({MIN_FPS:g}-{MAX_FPS:g}): required for folders of "
                             "numbered frames; overrides a video's header")


def check_output(flag: str, path: str | Path, inputs: Iterable[tuple[str, str | Path | None]] = ()) -> None:
    """Refuse an output path before any work: one that cannot be written, or one that is an
    input of the same command (``(flag, path)`` pairs; ``None`` paths are skipped), which
    writing the output would destroy."""
    from .files import same_file, unwritable_reason

    reason = unwritable_reason(path)
    if reason is not None:
        raise UsageError(f"{flag} {path}: cannot write here ({reason})")
    for other_flag, other in inputs:
        if other is not None and same_file(path, other):
            raise UsageError(f"{flag} {path} would overwrite {other_flag} {other}; write it elsewhere")




def refuse_given_twice(noun: str, paths: Sequence[str | Path], why: str) -> None:
    """Refuse one file given twice among ``paths`` before any work, in one line
    (:func:`fgsl.files.given_twice`)."""
    from .files import given_twice

    message = given_twice(noun, paths, why)
    if message is not None:
        raise UsageError(message)


def check_output_suffix(flag: str, path: str | Path, suffix: str, what: str) -> None:
    """Refuse an output named with another suffix than its format's, before any work (one line:
    ``FLAG PATH: WHAT; name it *SUFFIX``). ``calib.quantize`` needs it because onnx picks the
    format from the name; ``calib.collect`` because a ``.npz`` archive under ``c.json`` is
    found by nothing that looks for calibration files and opened as JSON by anything else.
    The comparison ignores case (``C.NPZ`` is fine)."""
    if Path(path).suffix.lower() != suffix:
        raise UsageError(f"{flag} {path}: {what}; name it *{suffix}")

def refuse_preset_with_weights(weights: object, preset: object) -> None:
    """``--preset`` picks the network only for ``--allow-untrained`` without weights; with
    ``--weights`` the folder's config.json does, and a preset given too would be ignored silently."""
    if weights and preset:
        raise UsageError("--preset is for --allow-untrained without --weights: a weights folder's config.json "
                         "sets its preset")


def missing_module(modules: Iterable[str], needed_by: str, hint: str) -> str | None:
    """Why the first of ``modules`` (an optional extra's packages) cannot be imported, as the
    text of one ``error:`` line naming what to install; ``None`` when all import. A package
    that is installed but broken (one of its own dependencies missing) is told apart."""
    import importlib

    from .signals import interrupts_deferred

    for module in modules:
        top = module.split(".")[0]
        try:
            # Ctrl-C is held until the import is done: raised inside a native module's
            # initialisation it became "ImportError: initialization failed" (pybind11), and
            # fgsl.infer fell back from ONNX Runtime to torch and ran to the end (exit 0).
            with interrupts_deferred():
                importlib.import_module(module)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == top:
                return f"{needed_by} needs {top}: {hint}"
            return f"{top} is installed but cannot be imported ({explain(exc)}): {hint}"
    return None


def error_line(exc: BaseException) -> str:
    """The text after ``error:``: an OS error as ``PATH: reason`` (not ``[Errno 28] ...: 'PATH'``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    return str(exc)


def _drop_stdout_if_broken() -> None:
    """When stdout itself failed (``> /dev/full``), point it at /dev/null so that Python's own
    flush at exit does not print a second, "Exception ignored" traceback."""
    try:
        sys.stdout.flush()
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """``main(argv)`` with bad input reported as one ``error:`` line (exit 2) and warnings as
    one ``warning:`` line each."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(main, argv)


def _run(main: Callable[[list[str] | None], int | None], argv: list[str] | None) -> int:
    try:
        return int(main(argv) or 0)
    except USER_ERRORS as exc:
        say(f"error: {error_line(exc)}")
        return 2
    except KeyboardInterrupt:
        return say_interrupted()
    except BrokenPipeError:  # e.g. piped into `head`: the reader has gone, nothing to report
        sys.stderr.close()
        return 0
    except OSError as exc:  # the machine, not the input or a bug: a full disk, a read-only folder, an I/O error
        say(f"error: {error_line(exc)}")
        _drop_stdout_if_broken()
        return 2
    except RuntimeError as exc:  # Path.resolve() before Python 3.13 (since then an OSError, ELOOP)
        if not str(exc).startswith(SYMLINK_LOOP):
            raise
        say(f"error: {str(exc)[len(SYMLINK_LOOP):].strip(chr(39))}: a symbolic link loop")
        return 2
