"""Per-browser live state: one :class:`~realtime.pipeline.Pipeline` per page, bounded and released.

The spotting itself is :mod:`realtime` (faces, buffers, spotter, events, overlay); this module
only keeps one pipeline per browser session and makes sure it goes away:

* :class:`PipelineFactory` builds a pipeline for the controls a page sends (spotter,
  sensitivity, max faces). The FGSL engine, when the app was started with ``--weights``, is
  opened once and shared; each session gets its own spotter (its own per-track caches).
* :class:`LiveSession` turns webcam frames (RGB arrays, as Gradio delivers them) into
  :class:`~realtime.types.Frame` records on the session's own clock, runs the pipeline, draws
  the overlay and keeps what the page shows: the latest events (at most ``max_events``), each
  face's recent motion signal (at most ``signal_s`` seconds per face, at most ``max_tracks``
  faces) and the frame rate and latency figures. Everything it holds is bounded, however long
  the stream runs.
* :class:`SessionRegistry` maps Gradio's ``session_hash`` to a session: at most
  ``max_sessions`` at once (the next page gets a clear "busy" message instead of a pipeline),
  released when the page is closed (the app wires ``demo.unload`` to :meth:`release`), when its
  webcam stops (the end of its stream event), when its controls change (a fresh pipeline for the
  new settings), or after ``idle_s`` seconds without a frame (a background reaper), whichever
  comes first. Releasing finishes the pipeline, which
  closes MediaPipe's landmarker; the events the finish flushes join the session's, which the
  page still shows (:meth:`SessionRegistry.view`) until it starts a new session.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from realtime.events import Sink
from realtime.face import FaceTracker
from realtime.overlay import OverlayState
from realtime.pipeline import Pipeline
from realtime.rate import RecentRate
from realtime.signal_history import SignalHistory
from realtime.spotters.base import Spotter
from realtime.types import Event, Frame

#: The largest number of faces the controls offer (MediaPipe slows down with each face).
MAX_FACES = 8
#: Sensitivity range the controls offer (the spotters accept any positive value).
SENSITIVITY_RANGE = (0.25, 4.0)
#: What asking for the FGSL spotter of a demo started without weights says (the page does not
#: offer it; an API caller, or an old page of a restarted server, can still ask).
FGSL_NEEDS_WEIGHTS = ("the FGSL spotter needs trained weights: start the demo with python -m demo --weights RUN_DIR "
                      "(the flow spotter needs none)")


class DemoError(ValueError):
    """Bad input from the page (a file that is not a video, no face, ...): one clear line."""


class SessionBusy(DemoError):
    """All live slots are taken."""


class SessionClosed(DemoError):
    """The session was released while a frame was on its way."""


#: About how wide the page shows an annotated frame (CSS px): half a row of a 1280 px window
#: (measured in chromium: 575). The overlay sizes its text for that, not for the frame's own
#: width, which is often larger.
SHOWN_WIDTH = 640


@dataclass(frozen=True)
class Settings:
    """The page's controls."""

    spotter: str = "flow"
    sensitivity: float = 1.0
    max_faces: int = 4

    @classmethod
    def from_controls(cls, spotter: Any, sensitivity: Any, max_faces: Any) -> "Settings":
        """Validated settings from the widgets' values (the API can send anything: out of range,
        empty, text), refused in one line naming the range the page's sliders offer."""
        name = str(spotter or "flow").strip().lower()
        low, high = SENSITIVITY_RANGE
        sens = _as_finite_float(sensitivity)
        if sens is None or not low <= sens <= high:
            raise DemoError(f"sensitivity must be a number from {low:g} to {high:g}, got {sensitivity!r}")
        # Refused, not rounded: 2.5 faces has no meaning, and int() would quietly make it 2
        # (the slider sends whole numbers, 4 or 4.0; only an API caller can send 2.5).
        faces = _as_finite_float(max_faces)
        if faces is None or not faces.is_integer() or not 1 <= faces <= MAX_FACES:
            raise DemoError(f"max faces must be a whole number from 1 to {MAX_FACES}, got {max_faces!r}")
        return cls(name, round(sens, 4), int(faces))


def _as_finite_float(value: Any) -> float | None:
    """``value`` as a finite float (a number or its text, not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class PipelineFactory:
    """Pipelines for :class:`Settings`: the flow spotter always, FGSL with an engine.

    ``weights``: an FGSL run folder (opened once here, through ``engines``; untrained weights
    are refused unless ``allow_untrained``, as in ``realtime.cam``). ``face_model``: a MediaPipe
    bundle of one's own instead of the shipped one.
    """

    def __init__(self, weights: str | Path | None = None, backend: str = "auto", allow_untrained: bool = False,
                 preset: str | None = None, face_model: str | Path | None = None, engine_device: str = "auto") -> None:
        self.engine: Any = None
        self.trained: bool | None = None
        self.face_model = face_model
        if weights or allow_untrained:
            from fgsl.infer import open_engine

            self.engine, self.trained = open_engine(weights, allow_untrained=allow_untrained, preset_name=preset,
                                                    backend=backend, device=engine_device)

    @property
    def spotters(self) -> tuple[str, ...]:
        return ("flow", "fgsl") if self.engine is not None else ("flow",)

    def spotter(self, settings: Settings) -> Spotter:
        if settings.spotter == "flow":
            from realtime.spotters.flow import FlowSpotter

            return FlowSpotter(sensitivity=settings.sensitivity)
        if settings.spotter == "fgsl":
            if self.engine is None:
                raise DemoError(FGSL_NEEDS_WEIGHTS)
            from realtime.spotters.fgsl import FGSLSpotter

            return FGSLSpotter(self.engine, sensitivity=settings.sensitivity, trained=self.trained)
        raise DemoError(f"unknown spotter {settings.spotter!r} (choose one of {', '.join(self.spotters)})")

    def describe(self, name: str) -> str:
        """One line about a spotter, for the page."""
        if name == "fgsl" and self.engine is not None:
            return self.spotter(Settings("fgsl")).describe()
        from realtime.spotters.flow import FlowSpotter

        return FlowSpotter().describe()

    def pipeline(self, settings: Settings, sinks: Iterable[Sink] = ()) -> Pipeline:
        spotter = self.spotter(settings)
        tracker = FaceTracker(max_faces=settings.max_faces, crop_size=spotter.crop_size, model_path=self.face_model)
        return Pipeline(tracker, spotter, sinks)


def to_bgr(image: Any) -> np.ndarray:
    """A webcam frame as Gradio delivers it (RGB, RGBA or grey uint8) as BGR uint8."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or min(image.shape[:2]) < 16:
        raise DemoError(f"expected a webcam image, got {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
    if image.shape[2] != 3:
        raise DemoError(f"expected an RGB image, got {image.shape[2]} channels")
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


@dataclass
class LiveStep:
    """What one webcam frame gave the page."""

    image_bgr: np.ndarray
    index: int
    fps: float | None  # frames reaching the server per second (recent; None: not a second of them yet)
    latency_ms: float  # this frame: arrival at the server -> annotated frame ready
    faces: int
    received_wall: float  # time.time() when the frame reached the handler (for the benchmark)
    stats: dict[str, Any] = field(default_factory=dict)


class LiveSession:
    """One browser's live pipeline and what its page shows (all bounded; see the module doc)."""

    def __init__(self, settings: Settings, pipeline: Pipeline, clock: Callable[[], float] = time.monotonic,
                 max_events: int = 200, signal_s: float = 20.0, max_tracks: int = 8,
                 no_face_s: float = 1.5) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.clock = clock
        self.overlay = OverlayState.for_spotter(pipeline.spotter, shown_width=SHOWN_WIDTH)
        self.events: deque[Event] = deque(maxlen=max_events)
        self.signals = SignalHistory(max_frames=max(2, round(signal_s * 60)), max_tracks=max_tracks)
        self.no_face_s = no_face_s
        self.frame_times: deque[tuple[int, float]] = deque(maxlen=max(2, round(signal_s * 60)))
        self._arrivals = RecentRate()
        self.latencies_ms: deque[float] = deque(maxlen=120)
        self.frames = 0
        self.t0: float | None = None
        self.last_used = clock()
        self.closed = False
        self.lock = threading.Lock()

    @property
    def spotter_name(self) -> str:
        return self.pipeline.spotter.name

    def fps(self) -> float | None:
        """Frames that reached the server per second, over the last 60 frames (or 5 s); ``None``
        until they span a second (:class:`~realtime.rate.RecentRate`)."""
        return self._arrivals.rate()

    def step(self, image: Any, received: float | None = None) -> LiveStep:
        """Run one webcam frame (RGB) through the pipeline; returns the annotated frame (BGR)."""
        received_wall = time.time()
        received = self.clock() if received is None else received
        bgr = to_bgr(image)
        with self.lock:
            if self.closed:
                raise SessionClosed("this live session was closed; start the webcam again")
            if self.t0 is None:
                self.t0 = received
            self.last_used = received
            self._arrivals.add(received)
            frame = Frame(self.frames, received - self.t0, received, bgr)
            result = self.pipeline.step(frame)
            self.frames += 1
            self.frame_times.append((frame.index, frame.timestamp))
            self.signals.update(self.pipeline.spotter)
            self.events.extend(result.events)
            seen = self.pipeline.last_face_s
            status = ""
            if not result.faces and (seen is None or frame.timestamp - seen >= self.no_face_s):
                status = "no face in view"
            fps = self.fps()
            previous = self.latencies_ms[-1] if self.latencies_ms else None
            stats = {"fps": fps, "latency_ms": previous, "spotter": self.spotter_name,
                     "untrained": self.pipeline.spotter.trained is False, "status": status}
            image_out = self.overlay.draw(bgr, result.faces, self.signals.recent(self.overlay.signal_samples),
                                          result.events, stats, frame.timestamp)
            latency = (self.clock() - received) * 1000
            self.latencies_ms.append(latency)
            stats["latency_ms"] = latency
            return LiveStep(image_out, frame.index, fps, latency, len(result.faces), received_wall, stats)

    def timestamps(self) -> dict[int, float]:
        """Stream time of the recent frames (source frame -> seconds), for plots."""
        return dict(self.frame_times)

    def continue_from(self, previous: "LiveSession") -> None:
        """Carry on the page's stream from ``previous`` (closed: its controls changed): its events,
        signals and frame numbers stay, so a new sensitivity does not wipe the table or restart
        the frame count; only the pipeline (and its spotting state) is new."""
        with previous.lock, self.lock:
            self.pipeline.tracker.continue_ids(previous.pipeline.tracker)  # (ids are never reused)
            self.events.extend(previous.events)
            self.signals = previous.signals
            self.frame_times.extend(previous.frame_times)
            self._arrivals.extend(previous._arrivals)
            self.frames, self.t0 = previous.frames, previous.t0

    def close(self) -> list[Event]:
        """Finish the pipeline (releases MediaPipe); waits for a frame in progress. Idempotent.

        The events the finish flushes (the movements of the stream's last moments, which the
        spotter's look-ahead had not yet confirmed) join :attr:`events`, so the page still shows
        them; they are also returned."""
        with self.lock:
            if self.closed:
                return []
            self.closed = True
            try:
                finished = self.pipeline.finish()
                self.events.extend(finished)
                self.signals.update(self.pipeline.spotter)
                return finished
            finally:
                self.pipeline.close()


def busy_message(limit: int) -> str:
    """What a page over the ``--max-sessions`` limit shows in place of its video. Its stream keeps
    going (each frame is answered with this line at once), so it starts by itself when a slot frees."""
    running = "1 live session already runs" if limit == 1 else f"{limit} live sessions already run"
    return (f"the server is busy: {running} (the limit, --max-sessions); this page's webcam starts spotting "
            f"when one ends; the upload tab works meanwhile")


class SessionRegistry:
    """``session_hash`` -> :class:`LiveSession`, bounded, with idle expiry (module docstring)."""

    def __init__(self, factory: Callable[[Settings], LiveSession], max_sessions: int = 4, idle_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1 or not idle_s > 0:
            raise ValueError("SessionRegistry needs max_sessions >= 1 and idle_s > 0")
        self.factory = factory
        self.max_sessions = max_sessions
        self.idle_s = float(idle_s)
        self.clock = clock
        self._sessions: dict[str, LiveSession] = {}
        self._starting: set[str] = set()
        # Pages that were closed: a frame still in flight when the tab closed must not start a
        # new session for it (Gradio never reuses a session id). Bounded: oldest forgotten.
        self._ended: OrderedDict[str, None] = OrderedDict()
        self.max_ended = 10_000
        # Pages whose stream just stopped (Stop): a frame the page sent just before it, handled
        # just after the release, must not start a session that then holds the slot until the
        # idle timeout. For stop_grace_s only: a page pressing Record again gets one after it.
        self._stopped: dict[str, float] = {}
        self.stop_grace_s = 1.0
        # Each open page's last released session (Stop, idle): the page still shows its final
        # events, the ones the pipeline's finish flushed. Dropped when the page starts a new
        # session, is cleared or closed; bounded, oldest first (a page's next tick, within a
        # second, reads it; each holds its closed pipeline's spotter and history, about 1 MB).
        self._retired: OrderedDict[str, LiveSession] = OrderedDict()
        self.max_retired = 16
        self._lock = threading.Lock()
        self.released = 0
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._sessions

    def peek(self, key: str) -> LiveSession | None:
        """The session of ``key`` if it exists (never creates one)."""
        with self._lock:
            return self._sessions.get(key)

    def page_closed(self, key: str) -> bool:
        """Whether the page of ``key`` was closed (``release(page_closed=True)``): its uploads stop."""
        with self._lock:
            return key in self._ended

    def view(self, key: str) -> LiveSession | None:
        """What the page of ``key`` shows: its session, else its last released one (closed)."""
        with self._lock:
            return self._sessions.get(key) or self._retired.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def get(self, key: str, settings: Settings) -> LiveSession:
        """The session of ``key`` for ``settings`` (created, or recreated when they changed: the
        new one continues the old one's events and frame numbers)."""
        stale: list[LiveSession] = []
        previous: LiveSession | None = None
        try:
            with self._lock:
                stale = self._expired_locked()
                if key in self._ended:
                    raise SessionClosed("this page was closed; reload it to start a new live session")
                now = self.clock()
                self._stopped = {k: t for k, t in self._stopped.items() if now - t < self.stop_grace_s}
                if key in self._stopped and key not in self._sessions:
                    raise SessionClosed("this page's live session was just stopped; a new one starts in a moment")
                session = self._sessions.get(key)
                if session is not None and session.settings == settings and not session.closed:
                    return session
                if session is not None:  # new controls: a fresh pipeline for them
                    previous = self._sessions.pop(key)
                    stale.append(previous)
                    # The page's view while the new one starts (and if it cannot): the old one's
                    # events, with what its finish flushes.
                    self._retire_locked(key, previous)
                if key in self._starting:
                    raise SessionBusy("this page's live session is still starting; frames resume in a moment")
                if len(self._sessions) + len(self._starting) >= self.max_sessions:
                    raise SessionBusy(busy_message(self.max_sessions))
                self._starting.add(key)
        finally:
            self._close(stale)
        try:
            session = self.factory(settings)  # MediaPipe loads here: outside the lock
        except BaseException:
            with self._lock:
                self._starting.discard(key)
            raise
        if previous is not None:  # before the page can see it (an empty table meanwhile, else)
            session.continue_from(previous)
        with self._lock:
            self._starting.discard(key)
            orphan = key in self._ended  # the page closed while its pipeline was being built
            if not orphan:
                self._sessions[key] = session
                self._retired.pop(key, None)
        if orphan:
            self._close([session])
            raise SessionClosed("this page was closed; reload it to start a new live session")
        return session

    def release(self, key: str, page_closed: bool = False, stream_stopped: bool = False,
                forget: bool = False) -> bool:
        """Close the session of ``key``; False when there was none. It stays the page's
        :meth:`view` (its final events) unless ``forget`` (the page cleared it) or ``page_closed``:
        the page is gone for good, so frames still on their way must not start a new session;
        ``stream_stopped``: its webcam stopped, so for ``stop_grace_s`` they must not either."""
        with self._lock:
            session = self._sessions.pop(key, None)
            if stream_stopped and session is not None:
                self._stopped[key] = self.clock()
            if forget or page_closed:
                self._retired.pop(key, None)
            elif session is not None:
                self._retire_locked(key, session)
            if page_closed:
                self._ended[key] = None
                while len(self._ended) > self.max_ended:
                    self._ended.popitem(last=False)
        if session is None:
            return False
        self._close([session])
        return True

    def reap(self) -> int:
        """Release sessions idle for more than ``idle_s``; returns how many."""
        with self._lock:
            stale = self._expired_locked()
        self._close(stale)
        return len(stale)

    def close_all(self) -> None:
        self.stop_reaper()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._retired.clear()
        self._close(sessions)

    def start_reaper(self, every_s: float | None = None) -> None:
        """Reap idle sessions in a daemon thread every ``every_s`` (default idle_s / 4, 1-10 s)."""
        if self._reaper is not None:
            return
        period = every_s if every_s is not None else min(10.0, max(1.0, self.idle_s / 4))
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(period):
                self.reap()

        self._reaper = threading.Thread(target=loop, name="demo-session-reaper", daemon=True)
        self._reaper.start()

    def stop_reaper(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=2)
            self._reaper = None

    def _expired_locked(self) -> list[LiveSession]:
        now = self.clock()
        gone = [k for k, s in self._sessions.items() if now - s.last_used > self.idle_s or s.closed]
        for key in gone:
            self._retire_locked(key, self._sessions[key])
        return [self._sessions.pop(k) for k in gone]

    def _retire_locked(self, key: str, session: LiveSession) -> None:
        self._retired.pop(key, None)
        self._retired[key] = session
        while len(self._retired) > self.max_retired:
            self._retired.popitem(last=False)

    def _close(self, sessions: list[LiveSession]) -> None:
        for session in sessions:
            session.close()
            with self._lock:
                self.released += 1
