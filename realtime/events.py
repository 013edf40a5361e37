"""Merge the candidates of overlapping windows into final events, and write them out.

Windows overlap, so one movement is reported by several windows. :class:`EventMerger`
keeps, per track, the pending candidates; a new candidate that overlaps a pending one
(temporal IoU >= ``iou`` on inclusive frame ranges) replaces it only if it scores higher
(NMS across windows). A pending candidate becomes a final :class:`~realtime.types.Event`
once it ends before ``final_before`` (the spotter's promise that no later window of that
track reports anything earlier; see :mod:`realtime.spotters.base`) or when its track ends.
Each event is emitted exactly once, with ``emitted_s`` on the stream clock so its delay
after the offset is known.

Sinks receive events as they are emitted and flush each one, so a Ctrl-C or a crash loses
nothing already spotted: :class:`ConsoleSink` (one readable line), :class:`JsonlSink` (the
schema in :mod:`realtime.types`), :class:`CsvSink` (the MEGC submission CSV
``subject,video,onset,offset,emotion``; micro-expressions only, as MEGC's STR task scores
micro-expressions; macro movements are in the JSONL with ``kind: "macro"``).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from fgsl.evaluate import MEGC_COLUMNS, iou
from fgsl.files import unwritable_reason

from .types import Candidate, Event, RealtimeError


def frame_iou(a: Candidate, b: Candidate) -> float:
    """IoU of two inclusive frame ranges, as the MEGC scorer counts them (:func:`fgsl.evaluate.iou`)."""
    return float(iou(a, b))


class EventMerger:
    """Cross-window NMS per track; emits each movement once, when it is final.

    ``gap_s`` > 0 (the spotter's ``merge_gap_s``: FGSL's as offline ``fgsl.infer``, the flow
    spotter's lag): candidates that overlap at all or lie within ``gap_s`` of each other are
    one movement too. A
    candidate rivalling an event already emitted on its track is dropped: a later window saw
    the same movement (or a ramp of it). A spotter's ``final_before`` promise keeps that rare;
    a track's last window, which starts wherever its last frames do, is where it happens.
    """

    def __init__(self, spotter: str, iou: float = 0.3, gap_s: float = 0.0) -> None:
        self.spotter = spotter
        self.iou = iou
        self.gap_s = gap_s
        self._pending: dict[int, list[Candidate]] = {}
        self._emitted: dict[int, deque[Candidate]] = {}

    def _rivals(self, a: Candidate, b: Candidate) -> bool:
        if frame_iou(a, b) >= self.iou:
            return True
        return self.gap_s > 0 and a.onset_s - self.gap_s <= b.offset_s and b.onset_s - self.gap_s <= a.offset_s

    def add(self, track: int, candidates: list[Candidate], final_before: int, now_s: float,
            track_ended: bool = False) -> list[Event]:
        """Take one window's candidates; return the events that are now final."""
        pending = self._pending.setdefault(track, [])
        emitted = self._emitted.setdefault(track, deque(maxlen=16))
        for cand in candidates:
            if any(self._rivals(e, cand) for e in emitted):
                continue
            rivals = [p for p in pending if self._rivals(p, cand)]
            if all(cand.score > r.score for r in rivals):
                for r in rivals:
                    pending.remove(r)
                pending.append(cand)
        done = [c for c in pending if track_ended or c.offset < final_before]
        self._pending[track] = [c for c in pending if c not in done]
        emitted.extend(done)
        if track_ended:
            del self._pending[track]
            del self._emitted[track]
        return [self._event(c, now_s) for c in sorted(done, key=lambda c: c.onset)]

    def finish(self, now_s: float) -> list[Event]:
        """Emit everything still pending (end of stream)."""
        out = []
        for track in list(self._pending):
            out += self.add(track, [], 0, now_s, track_ended=True)
        return out

    @property
    def pending(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def _event(self, c: Candidate, now_s: float) -> Event:
        return Event(track=c.track, onset=c.onset, apex=c.apex, offset=c.offset, onset_s=c.onset_s,
                     offset_s=c.offset_s, label=c.label, score=c.score, spotter=self.spotter,
                     emitted_s=max(now_s, c.offset_s), kind=c.kind)


# ---------------------------------------------------------------------------- sinks
class Sink(Protocol):
    def write(self, event: Event) -> None: ...

    def close(self) -> None: ...


def _open_for_writing(path: str | Path) -> IO[str]:
    path = Path(path)
    reason = unwritable_reason(path)
    if reason is not None:
        raise RealtimeError(f"{path}: cannot write here ({reason})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise RealtimeError(f"{path}: cannot write here ({exc.strerror or exc})") from None


class SinkError(RealtimeError):
    """An event file that can no longer be written (a full disk, a vanished network share).
    :class:`~realtime.pipeline.Pipeline` drops that sink, keeps feeding the others (the
    console still shows every event) and raises this once the batch is written."""


class _FileSink:
    """An event file, flushed per event; a write that fails is one :class:`SinkError` line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = _open_for_writing(self.path)
        self._failed = False

    def _put(self, text: str) -> None:
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            self._failed = True
            raise SinkError(f"{self.path}: cannot write events any more ({exc.strerror or exc})") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:  # the buffered rest could not be written either
            if not self._failed:
                raise SinkError(f"{self.path}: cannot write events any more ({exc.strerror or exc})") from None


def describe(event: Event) -> str:
    """The console line of one event."""
    return (f"{event.kind.upper():5s} track {event.track}  {event.label:8s} score {event.score:.2f}  "
            f"onset {event.onset} apex {event.apex} offset {event.offset}  "
            f"({event.onset_s:.2f}-{event.offset_s:.2f} s, emitted +{event.delay_s:.2f} s)")


class ConsoleSink:
    """One line per event on stdout.

    When stdout cannot be written the console falls silent but the run goes on, so the event
    files are still complete: the reader went away (``... | head -1``, a broken pipe), or the
    file behind it failed (``> run.log`` on a full disk, a terminal giving EIO). stdout is then
    pointed at ``/dev/null``, so that Python's own flush at exit does not complain either (the
    recipe in Python's docs, "Note on SIGPIPE"). A closed pipe is the reader's choice and no
    error; any other failure is kept in :attr:`failure`, for the caller to report once the run
    is over (an incomplete log must not pass for a whole one).
    """

    def __init__(self, stream: IO[str] | None = None, tag: str = "") -> None:
        self.stream = stream or sys.stdout
        self.tag = tag  # appended to every line (the untrained-weights warning)
        self.silenced = False
        self.failure: OSError | None = None  # why the console fell silent, unless a closed pipe

    def write(self, event: Event) -> None:
        if self.silenced:
            return
        try:
            print(describe(event) + self.tag, file=self.stream, flush=True)
        except OSError as exc:  # BrokenPipeError; Windows says EINVAL for a closed pipe
            self.silenced = True
            if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.EINVAL):
                self.failure = exc
            self._discard_the_rest()

    def _discard_the_rest(self) -> None:
        """Point the stream's file descriptor at the null device (also for what is still buffered)."""
        try:
            null = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            return
        try:
            os.dup2(null, self.stream.fileno())
        except (OSError, ValueError):  # not a real file (a StringIO): nothing to redirect
            pass
        finally:
            os.close(null)

    def close(self) -> None:
        pass


class DeferredSink:
    """A file sink made only when :meth:`open` is called (or at its first event).

    Making a file sink truncates its file. ``realtime.cam`` opens its files once the first
    face is tracked, so a run that never sees one (the wrong video, a camera facing a wall)
    leaves an earlier run's files as they were. A file that cannot be made then is a
    :class:`SinkError`, so the pipeline drops it like a file that fails later.
    """

    def __init__(self, make: Callable[[], Sink]) -> None:
        self._make = make
        self._sink: Sink | None = None

    @property
    def opened(self) -> bool:
        return self._sink is not None

    def open(self) -> Sink:
        if self._sink is None:
            try:
                self._sink = self._make()
            except SinkError:
                raise
            except RealtimeError as exc:  # "cannot write here": the folder went away since the start
                raise SinkError(str(exc)) from None
        return self._sink

    def write(self, event: Event) -> None:
        self.open().write(event)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


class JsonlSink(_FileSink):
    """One JSON object per event (:data:`~realtime.types.EVENT_SCHEMA`), plus ``extra`` keys
    on every line (``{"untrained": true}`` for untrained weights)."""

    def __init__(self, path: str | Path, extra: dict[str, object] | None = None) -> None:
        super().__init__(path)
        self.extra = dict(extra or {})

    def write(self, event: Event) -> None:
        self._put(json.dumps({**event.to_json(), **self.extra}) + "\n")


class CsvSink(_FileSink):
    """MEGC submission rows for micro-expressions; every row carries ``subject`` and ``video``."""

    HEADER = MEGC_COLUMNS

    def __init__(self, path: str | Path, subject: str, video: str) -> None:
        super().__init__(path)
        self.subject, self.video = subject, video
        try:
            self._put(self._row(self.HEADER))
        except SinkError:
            self.close()
            raise

    @staticmethod
    def _row(values: tuple[object, ...]) -> str:
        line = io.StringIO()
        csv.writer(line).writerow(values)
        return line.getvalue()

    def write(self, event: Event) -> None:
        if event.kind != "micro":
            return
        self._put(self._row((self.subject, self.video, event.onset, event.offset, event.label)))
