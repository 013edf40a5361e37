"""One frame through faces -> buffers -> spotter -> events -> sinks, with per-stage timings.

The CLI (``realtime.cam``), the benchmark (``realtime.bench``) and the Gradio demo all drive
this one class, so what they show is the same computation. Capture stays outside: the
caller owns the thread and hands frames in.

Stage names (the benchmark's ``stages``): ``capture`` (frame read -> processing starts:
decode hand-off and queueing), ``face`` (MediaPipe), ``align`` (key-point smoothing and the
warp), ``spotter`` (buffering and the spotter on the windows that completed), ``events``
(merging and the sinks).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .buffer import Buffers
from .events import EventMerger, Sink, SinkError
from .face import FaceTracker
from .spotters.base import Spotter
from .types import Event, FaceObservation, Frame, Window

STAGES = ("capture", "face", "align", "spotter", "events")


@dataclass
class StepResult:
    """What one frame produced, for overlays and for the benchmark."""

    frame: Frame
    faces: list[FaceObservation]
    events: list[Event]
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Faces, buffers, spotter and event merging for one stream."""

    def __init__(self, tracker: FaceTracker, spotter: Spotter, sinks: Iterable[Sink] = ()) -> None:
        self.tracker = tracker
        self.spotter = spotter
        self.sinks = list(sinks)
        self.buffers = Buffers(spotter.window, spotter.stride, spotter.fps)
        self.merger = EventMerger(spotter.name, gap_s=spotter.merge_gap_s)
        self.frames = 0
        self.event_count = 0
        self.micro_count = 0
        self.last_face_s: float | None = None  # stream time of the last frame with a face
        self._now = 0.0
        self._failed_sinks: list[Sink] = []  # dropped by _write, still to be closed
        self._sink_failure: SinkError | None = None  # raised at the end of the step that met it

    def step(self, frame: Frame) -> StepResult:
        start = time.monotonic()
        timings = {"capture": max(0.0, (start - frame.captured) * 1000)}
        self.frames += 1
        self._now = frame.timestamp
        update = self.tracker.process(frame)
        timings["face"], timings["align"] = update.face_ms, update.align_ms
        if update.faces:
            self.last_face_s = frame.timestamp
        t0 = time.monotonic()
        windows = self.buffers.push(update.faces)
        ended = self.buffers.end(update.lost)
        done = self._spot(windows + ended, ended_tracks=set(update.lost))
        timings["spotter"] = (time.monotonic() - t0) * 1000 - done[1]
        timings["events"] = done[1]
        self._raise_sink_failure()
        return StepResult(frame, update.faces, done[0], timings)

    def finish(self) -> list[Event]:
        """End of stream: close every track, flush every pending event."""
        lost = self.tracker.close()
        ended = self.buffers.end(lost) + self.buffers.end_all()
        events, _ = self._spot(ended, ended_tracks=set(lost) | {w.track for w in ended})
        tail = self.merger.finish(self._now)
        self._write(tail)
        self._raise_sink_failure()
        return events + tail

    # ------------------------------------------------------------------ internals
    def _spot(self, windows: list[Window], ended_tracks: set[int]) -> tuple[list[Event], float]:
        """Run the spotter on ``windows`` (one batch) and merge; returns events and ms in events.

        Every track in ``ended_tracks`` is finished here, also when it brings no last window (a
        track whose buffer had no frame): its pending events are
        emitted now, not at the end of the stream, and the spotter and merger drop its state."""
        results = self.spotter.process(windows) if windows else []
        t0 = time.monotonic()
        events: list[Event] = []
        for window, candidates in zip(windows, results):
            events += self.merger.add(window.track, candidates, self.spotter.final_before(window), self._now,
                                      track_ended=window.final)
        closed = {w.track for w in windows if w.final}
        for track in sorted(ended_tracks - closed):
            events += self.merger.add(track, [], 0, self._now, track_ended=True)
        for track in ended_tracks:
            self.spotter.end_track(track)
        self._write(events)
        return events, (time.monotonic() - t0) * 1000

    def _write(self, events: list[Event]) -> None:
        """Every event to every sink. A sink that fails (:class:`SinkError`) is dropped while the
        others, the console among them, get every event; :meth:`step` and :meth:`finish` raise
        the failure once their work is done (``realtime.cam`` ends the run there, as when its
        source fails), so no event of the step is lost to the console. Ctrl-C in a sink's write
        is raised once the other sinks have the whole batch."""
        interrupted: tuple[KeyboardInterrupt, Sink] | None = None
        for event in events:
            self.event_count += 1
            self.micro_count += event.kind == "micro"
            for sink in list(self.sinks):
                if interrupted is not None and sink is interrupted[1]:
                    continue
                try:
                    sink.write(event)
                except SinkError as exc:
                    self.sinks.remove(sink)
                    self._failed_sinks.append(sink)
                    self._sink_failure = self._sink_failure or exc
                except KeyboardInterrupt as exc:
                    # Ctrl-C while a sink was busy (a blocked terminal): these events are out of
                    # the merger already, so the other sinks still get the whole batch first.
                    interrupted = interrupted or (exc, sink)
        if interrupted is not None:
            raise interrupted[0]

    def _raise_sink_failure(self) -> None:
        failure, self._sink_failure = self._sink_failure, None
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Close every sink, even when one fails to (the first failure is raised after)."""
        failure: BaseException | None = None
        for sink in self.sinks + self._failed_sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - the others must still be closed
                failure = failure or exc
        if failure is not None:
            raise failure
