"""Capture: a camera, a video file or a folder of numbered frames as a stream of :class:`Frame`.

Reading runs in its own thread so that decoding overlaps face tracking and the spotter
(docs/design.md, "Contracts"). The two kinds of source need opposite policies:

* **Files and frame folders** are evidence: every frame counts, so none is ever dropped. The
  thread blocks on a bounded queue until the consumer takes the next frame (no unbounded
  memory), and with ``realtime=True`` it also waits for each frame's time on the file's clock
  (the CLI's ``--realtime``, a stand-in for a live camera). ``timestamp`` is ``index / fps``
  so event times match the video's own clock.
* **Live cameras** (and network streams) cannot wait: a consumer that falls behind must see
  the present, not a growing backlog. The queue holds only the newest few frames; when it is
  full the *oldest* is dropped and counted. A camera that stops delivering (unplugged, driver
  hiccup) is released and reopened with exponential backoff while ``stats.status`` says so;
  after ``give_up_s`` seconds without a frame the stream ends with a :class:`RealtimeError`.
  Frame indices keep counting across reconnects, ``timestamp`` is seconds since the capture
  started.

The end of a stream reaches the consumer as the end of iteration; a failure as
:class:`RealtimeError` raised from iteration (one line, naming the source). Files and folders
are read by :func:`fgsl.data.frames.open_source`; its :class:`~fgsl.data.frames.VideoError` is
converted to :class:`RealtimeError`, so everything this module raises for bad input is one type.
A broken image in a folder ends the stream with that error; a video file ends where OpenCV stops
decoding (it cannot tell a broken tail from the end of the file).

Typical use::

    with Capture(parse_source(device=None, path="clip.mp4")) as capture:
        for frame in capture:
            ...
        print(capture.stats)
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

import cv2
import numpy as np

from fgsl.config import is_positive_number
from fgsl.data.frames import FrameSource, VideoError, opencv_quiet, open_source

from .types import Frame, RealtimeError

#: Frame rate assumed for a camera that reports none (many webcams report 0).
DEFAULT_CAMERA_FPS = 30.0
#: Newest frames kept for a live camera: small, so what the consumer sees is recent.
LIVE_QUEUE_SIZE = 2
#: Frames decoded ahead for files: enough to smooth decode jitter, bounded in memory.
FILE_QUEUE_SIZE = 16
#: How far (s) a ``--realtime`` file may fall behind its own clock before that is said: more
#: than the file queue's half second of frames, so a short stall is no news.
BEHIND_S = 1.0
_POLL_S = 0.05  # how often blocked waits look at the stop flag
#: Frames short of its reported count at which a recording behind a URL counts as finished
#: (containers' counts are estimates).
RECORDING_END_SLACK = 2


class FrameReader(Protocol):
    """What capture needs from a camera: the subset of ``cv2.VideoCapture`` it uses."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's spelling)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class CameraSource:
    """A live source: ``opener()`` returns a fresh reader each time (first open and reopens)."""

    name: str
    opener: Callable[[], FrameReader]


@dataclass(frozen=True)
class FileSource:
    """A video file or a folder of numbered frames; ``fps`` overrides the file's / sets the folder's."""

    path: Path
    fps: float | None = None

    @property
    def name(self) -> str:
        return str(self.path)


CaptureSource = CameraSource | FileSource


def camera_opener(
    device: int | str, fps: float | None = None, size: tuple[int, int] | None = None
) -> Callable[[], FrameReader]:
    """An opener for ``cv2.VideoCapture(device)``, asking for ``fps`` and ``size`` (width, height).

    The requests are hints: drivers pick the nearest mode they support, and capture reads the
    rate actually reported back.
    """

    def open_camera() -> FrameReader:
        with opencv_quiet():  # a missing camera is one error line of ours, not a dozen of OpenCV's
            cap = cv2.VideoCapture(device)
        if cap.isOpened():
            if size is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
            if fps is not None:
                cap.set(cv2.CAP_PROP_FPS, fps)
        return cap

    return open_camera


def parse_source(
    device: int | None,
    path: str | Path | None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
) -> CaptureSource:
    """The source named by the CLI's ``--device`` or ``--source`` (exactly one of them).

    A ``path`` with a URL scheme (``rtsp://``, ``http://``) is a network stream and gets the
    camera policy (newest frames, reconnects), except that a stream that reports a frame count
    (a recording served over HTTP) ends at its end instead of being reopened (:func:`_recording_ended`).
    A ``file://`` URL is a file. ``fps`` is the rate to request from a camera, or the rate of a
    file (overriding its header) or of a frame folder (which has none of its own).
    """
    if (device is None) == (path is None):
        raise RealtimeError("give exactly one source: a camera (--device N) or a file/folder (--source PATH)")
    if fps is not None and not is_positive_number(fps):
        raise RealtimeError(f"fps must be a positive number, got {fps}")
    if isinstance(path, str) and not path.strip():  # (as a Path, "" would be the current folder)
        raise RealtimeError("--source is empty: give a video file, a frame folder, a stream URL or a camera path")
    if device is not None:
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise RealtimeError(f"camera index must be a whole number >= 0, got {device!r}")
        return CameraSource(f"camera {device}", camera_opener(device, fps, size))
    text = str(path)
    url = urlparse(text)
    if url.scheme.lower() == "file":
        if url.netloc not in ("", "localhost"):
            raise RealtimeError(f"{text}: a file URL on another host ({url.netloc}); give a path instead")
        return FileSource(Path(url2pathname(url.path)), fps)
    if "://" in text:
        return CameraSource(f"stream {text}", camera_opener(text, fps, size))
    if _is_device(text):  # /dev/video2, /dev/v4l/by-id/...: a camera named by path
        return CameraSource(f"camera {text}", camera_opener(text, fps, size))
    if fps is None and Path(text).is_dir():
        raise RealtimeError(f"{text}: a folder of frames has no frame rate of its own; pass it with --fps")
    return FileSource(Path(text), fps)


def _is_device(path: str) -> bool:
    """Whether ``path`` is a character device (a V4L2 camera node), which gets the camera policy
    (newest frames, reconnects, monotonic timestamps) rather than a file's."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class CaptureStats:
    """A snapshot of the capture's counters.

    ``read``: frames taken from the source; ``delivered``: handed to the consumer; ``dropped``:
    discarded because the consumer was behind (live sources only); ``reconnects``: outages after
    which frames flowed again; ``status``: empty while frames flow, else what is going on.
    """

    source: str
    fps: float
    live: bool
    read: int
    delivered: int
    dropped: int
    reconnects: int
    status: str


class _End:
    """Queue marker: the stream ended normally."""


_END = _End()


@dataclass(frozen=True)
class _Failure:
    """Queue marker: the stream ended with this exception (raised in the consumer)."""

    error: BaseException


_Item = Frame | _End | _Failure


class Capture:
    """Reads a source in a background thread; iterate it to receive :class:`Frame` records.

    Opening happens here, so a bad source fails at construction with one clear line and
    :attr:`fps` is known before :meth:`start`. Iterating starts the thread if needed. ``queue_size``
    defaults to :data:`LIVE_QUEUE_SIZE` for live sources and :data:`FILE_QUEUE_SIZE` for files.
    ``backoff_s`` is the (first, longest) wait between camera reopen attempts; ``realtime`` only
    affects files (a camera is real time already). ``on_outage`` is called (from the capture
    thread) with one line when a camera is lost and one when it is back: while it is away the
    consumer waits for frames and cannot say so itself; and once when a ``realtime`` file falls
    :data:`BEHIND_S` behind its clock (its frames are never dropped, so a slow machine would
    otherwise show no sign of what a camera would have dropped).
    """

    def __init__(
        self,
        source: CaptureSource,
        realtime: bool = False,
        queue_size: int | None = None,
        give_up_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 4.0),
        on_outage: Callable[[str], None] | None = None,
    ) -> None:
        if not give_up_s > 0:
            raise RealtimeError(f"give_up_s must be positive, got {give_up_s}")
        if not 0 < backoff_s[0] <= backoff_s[1]:
            raise RealtimeError(f"backoff_s must be (first, longest) with 0 < first <= longest, got {backoff_s}")
        self.source = source
        self.on_outage = on_outage
        self.name = source.name
        self.live = isinstance(source, CameraSource)
        self.realtime = realtime
        self.give_up_s = float(give_up_s)
        self.backoff_s = (float(backoff_s[0]), float(backoff_s[1]))
        size = queue_size if queue_size is not None else (LIVE_QUEUE_SIZE if self.live else FILE_QUEUE_SIZE)
        if size < 1:
            raise RealtimeError(f"queue_size must be at least 1, got {size}")
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._read = self._delivered = self._dropped = self._reconnects = 0
        self._status = ""
        self._t0 = 0.0
        self._reader: FrameReader | None = None
        self._frames: FrameSource | None = None
        if isinstance(source, CameraSource):
            self._reader = self._first_open()
            if self._reader is None:
                raise RealtimeError(
                    f"{self.name}: cannot open (not connected, in use by another program, or no permission)"
                )
            self.fps = _camera_fps(self._reader)
        else:
            try:
                self._frames = open_source(source.path, source.fps)
            except VideoError as exc:
                raise RealtimeError(str(exc)) from None
            self.fps = self._frames.fps

    # -- consumer side -------------------------------------------------------------------

    def start(self) -> Capture:
        """Start the reading thread (once; later calls do nothing)."""
        if self._thread is None and not self._stop.is_set():
            self._t0 = time.monotonic()
            target = self._run_camera if self.live else self._run_file
            self._thread = threading.Thread(target=self._guard, args=(target,), name=f"capture {self.name}", daemon=True)
            self._thread.start()
        return self

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order until the stream ends; a failed stream raises :class:`RealtimeError`."""
        self.start()
        while not self._finished:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"capture thread of {self.name} ended without an end marker")
                continue
            if isinstance(item, Frame):
                with self._lock:
                    self._delivered += 1
                yield item
                continue
            self._finished = True
            self._join(timeout=1.0)
            if isinstance(item, _Failure):
                raise item.error

    def stop(self, timeout: float = 1.0) -> None:
        """Stop reading and release the source; returns within about ``timeout`` seconds.

        A camera driver stuck inside ``read()`` cannot be interrupted: its daemon thread is then
        left to finish on its own (it releases the camera when ``read()`` returns).
        """
        self._stop.set()
        self._finished = True
        self._join(timeout)
        if self._thread is None and self._reader is not None:  # opened but never started
            _release(self._reader)
            self._reader = None

    @property
    def running(self) -> bool:
        """Whether the reading thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(
                self.name, self.fps, self.live, self._read, self._delivered,
                self._dropped, self._reconnects, self._status,
            )

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # -- thread side ---------------------------------------------------------------------

    def _guard(self, target: Callable[[], None]) -> None:
        """Run ``target``; whatever it raises reaches the consumer instead of dying silently."""
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the consumer's thread)
            self._put_end(_Failure(exc))
        else:
            self._put_end(_END)

    def _run_file(self) -> None:
        assert self._frames is not None
        frames = iter(self._frames)
        index = 0
        behind_said = False
        try:
            while not self._stop.is_set():
                try:
                    image = next(frames)
                except StopIteration:
                    return
                except VideoError as exc:
                    raise RealtimeError(str(exc)) from None
                except cv2.error as exc:
                    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
                    raise RealtimeError(f"{self.name}: frame {index} cannot be decoded ({detail})") from None
                timestamp = index / self.fps
                if self.realtime and self._stop.wait(max(0.0, self._t0 + timestamp - time.monotonic())):
                    return
                if self.realtime and not behind_said and time.monotonic() - self._t0 - timestamp > BEHIND_S:
                    behind_said = True
                    self._tell(f"{self.name}: --realtime: the spotter is more than {BEHIND_S:g} s behind the "
                               "file's clock (slower than real time on this machine); every frame is still "
                               "spotted, where a camera would drop frames")
                captured = time.monotonic()  # paced: the frame "arrives" now, as a camera's would
                if not self._put_blocking(Frame(index, timestamp, captured, image)):
                    return
                with self._lock:
                    self._read += 1
                index += 1
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _run_camera(self) -> None:
        reader, self._reader = self._reader, None
        index = 0
        lost_since: float | None = None
        delay = self.backoff_s[0]
        try:
            while not self._stop.is_set():
                ok, image = _read(reader)
                now = time.monotonic()
                if ok:
                    if lost_since is not None:
                        self._tell(f"{self.name} back after {_seconds(now - lost_since)} s")
                        lost_since, delay = None, self.backoff_s[0]
                        with self._lock:
                            self._status = ""
                            self._reconnects += 1
                    self._put_newest(Frame(index, now - self._t0, now, image))
                    index += 1
                    continue
                if _recording_ended(reader, self.name):
                    return
                _release(reader)
                reader = None
                if lost_since is None:
                    lost_since = now
                    self._tell(f"{self.name} {'lost' if index else 'gives no frames'}: reopening it "
                               f"(giving up after {self.give_up_s:g} s)")
                outage = now - lost_since
                if outage >= self.give_up_s:
                    with self._lock:
                        self._status = f"{self.name} given up"
                    what = "gave no frame since it was opened" if index == 0 else "lost"
                    raise RealtimeError(
                        f"{self.name} {what}: no frames for {_seconds(outage)} s (gave up after {self.give_up_s:g} s); "
                        "check that it is connected and not in use by another program"
                    )
                wait = min(delay, self.give_up_s - outage)
                with self._lock:
                    self._status = f"{self.name} lost; reopening in {_seconds(wait)} s"
                if self._stop.wait(wait):
                    return
                delay = min(delay * 2, self.backoff_s[1])
                reader = self._open_camera()
        finally:
            _release(reader)

    def _tell(self, message: str) -> None:
        """Say that the camera was lost or came back (``on_outage``; the overlay shows ``stats.status``)."""
        if self.on_outage is not None:
            self.on_outage(message)

    @property
    def notes(self) -> list[str]:
        """What reading a file found and warned about so far (:attr:`fgsl.data.frames.FrameSource.notes`:
        a cut-off end, a variable frame rate), as reasons without the file's name; none for a camera."""
        return list(self._frames.notes) if self._frames is not None else []

    def _first_open(self) -> FrameReader | None:
        """:meth:`_open_camera` in a thread of its own, waited for in short steps. A stream
        URL whose server never answers holds OpenCV's open for its 30-s timeout, and a Ctrl-C
        meanwhile waited for it (the main thread was inside OpenCV); now it ends the run at
        once, and the open is left to finish or time out in that daemon thread."""
        opened: list[FrameReader | None] = []
        abandoned = False  # the caller is gone (Ctrl-C): a late reader is released there; read and set under handover
        handover = threading.Lock()

        def open_camera() -> None:
            reader = self._open_camera()
            with handover:
                if abandoned:
                    _release(reader)  # (the camera would stay busy for the next program)
                else:
                    opened.append(reader)

        thread = threading.Thread(target=open_camera, name="capture-open", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(_POLL_S)
        except BaseException:
            with handover:
                abandoned = True
                for reader in opened:  # opened between the interrupt and here
                    _release(reader)
            raise
        return opened[0] if opened else None

    def _open_camera(self) -> FrameReader | None:
        """A fresh opened reader, or ``None`` (an opener that raises counts as a failed open)."""
        assert isinstance(self.source, CameraSource)
        try:
            reader = self.source.opener()
        except Exception:  # noqa: BLE001 (a driver error is just "not open yet")
            return None
        if reader is None or not reader.isOpened():
            _release(reader)
            return None
        return reader

    def _put_blocking(self, item: _Item) -> bool:
        """Wait for room (files never drop); ``False`` when stopped meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _put_newest(self, item: _Item) -> None:
        """Enqueue now, dropping the oldest queued frames to make room (live sources)."""
        while True:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                try:
                    old = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(old, Frame):
                    with self._lock:
                        self._dropped += 1
                continue
            if isinstance(item, Frame):
                with self._lock:
                    self._read += 1
            return

    def _put_end(self, item: _End | _Failure) -> None:
        if self.live:
            self._put_newest(item)
        else:
            self._put_blocking(item)

    def _join(self, timeout: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _read(reader: FrameReader | None) -> tuple[bool, np.ndarray | None]:
    """One camera read; a driver exception or an empty image counts as a failed read."""
    if reader is None:
        return False, None
    try:
        ok, image = reader.read()
    except cv2.error:
        return False, None
    if not ok or image is None or image.size == 0:
        return False, None
    return True, image


def _recording_ended(reader: FrameReader | None, name: str) -> bool:
    """Whether a failed read is the end of a recording (a video file behind a URL) rather than
    an outage. Cameras and live streams report no frame count (0 or -1); a recording does, and
    reopening one would play it again from the start, for ever. A recording that breaks off
    well before its end cannot be resumed either (a reopen starts over): that is an error.
    """
    if reader is None:
        return False
    try:
        count = float(reader.get(cv2.CAP_PROP_FRAME_COUNT))
        position = float(reader.get(cv2.CAP_PROP_POS_FRAMES))
    except (cv2.error, TypeError, ValueError):
        return False
    if not is_positive_number(count):
        return False
    if position < count - RECORDING_END_SLACK:
        raise RealtimeError(f"{name} broke off at frame {position:.0f} of {count:.0f} "
                            "(a recording: reopening would start it over)")
    return True


def _seconds(value: float) -> str:
    """Seconds for a status line: one decimal, two below 0.1 s (so short waits do not read 0.0)."""
    return f"{value:.1f}" if value >= 0.1 else f"{value:.2f}"


def _camera_fps(reader: FrameReader) -> float:
    try:
        fps = float(reader.get(cv2.CAP_PROP_FPS))
    except (cv2.error, TypeError, ValueError):
        return DEFAULT_CAMERA_FPS
    return fps if is_positive_number(fps) and fps <= 1000 else DEFAULT_CAMERA_FPS


def _release(reader: FrameReader | None) -> None:
    if reader is None:
        return
    try:
        reader.release()
    except Exception:  # noqa: BLE001 (releasing a lost camera may fail; nothing to do about it)
        pass
