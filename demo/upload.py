"""The upload tab's work: a whole video through the live pipeline, then a plot, a table and files.

The video is read by :class:`realtime.capture.Capture` (a file never drops a frame), every frame
goes through the same :class:`~realtime.pipeline.Pipeline` as the live tab and ``realtime.cam``,
events go to :class:`~realtime.events.CsvSink` (MEGC submission format) and
:class:`~realtime.events.JsonlSink` as they are emitted, and the annotated frames (drawn by
:class:`~realtime.overlay.OverlayState`) are encoded as H.264 so a browser plays them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fgsl.config import is_positive_number
from fgsl.data.frames import opencv_name
from realtime.capture import Capture, parse_source
from realtime.events import CsvSink, JsonlSink
from realtime.overlay import OverlayState, VideoSaver
from realtime.pipeline import Pipeline
from realtime.signal_history import SignalHistory
from realtime.types import Event, RealtimeError, too_short

from .plots import signal_plot
from .session import SHOWN_WIDTH, DemoError, PipelineFactory, Settings

#: Columns of the event tables (live and upload).
TABLE_HEADERS = ["face", "kind", "emotion", "score", "onset", "apex", "offset", "onset s", "offset s", "emitted +s"]
#: The longest side of the annotated video (larger uploads are scaled down for the browser).
MAX_VIDEO_SIDE = 1280


def event_rows(events: list[Event]) -> list[list]:
    """Table rows, one per event, in the order of :data:`TABLE_HEADERS`."""
    return [[e.track, e.kind, e.label, round(e.score, 3), e.onset, e.apex, e.offset, round(e.onset_s, 2),
             round(e.offset_s, 2), round(e.delay_s, 2)] for e in events]


class BrowserVideo:
    """Annotated frames -> an ``.mp4`` a browser plays: H.264 through ``ffmpeg`` when it is
    installed, else OpenCV's ``mp4v`` (:class:`~realtime.overlay.VideoSaver`; most browsers
    will then only offer the file for download, which :attr:`playable` says)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), float(fps)
        self.ffmpeg = shutil.which("ffmpeg")
        self.playable = self.ffmpeg is not None
        self._proc: subprocess.Popen | None = None
        self._saver: VideoSaver | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image_bgr: np.ndarray) -> None:
        h, w = image_bgr.shape[:2]
        if self._size is None:
            scale = min(1.0, MAX_VIDEO_SIDE / max(h, w))
            self._size = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
            self._open()
        if (w, h) != self._size:
            image_bgr = cv2.resize(image_bgr, self._size, interpolation=cv2.INTER_AREA)
        if self._proc is not None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(np.ascontiguousarray(image_bgr).tobytes())
            except (BrokenPipeError, OSError):
                raise DemoError(f"ffmpeg stopped while writing the annotated video: {self._stderr()}") from None
        else:
            assert self._saver is not None
            self._saver.write(image_bgr)
        self.frames += 1

    def _open(self) -> None:
        assert self._size is not None
        if self.ffmpeg:
            w, h = self._size
            cmd = [self.ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                   "-r", f"{self.fps:.6g}", "-i", "-", "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                   "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(self.path)]
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        else:
            self._saver = VideoSaver(self.path, self.fps)

    def _stderr(self) -> str:
        if self._proc is None or self._proc.stderr is None:
            return ""
        try:
            self._proc.wait(timeout=5)
            return self._proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:][0]
        except (subprocess.TimeoutExpired, IndexError, OSError):
            return "no message"

    def close(self) -> Path | None:
        """Finish the file; its path, or None when no frame was written."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = -1
            if rc != 0:
                message = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise DemoError(f"ffmpeg could not write the annotated video (status {rc}): {message[-300:]}")
        if self._saver is not None:
            self._saver.close()
            self._saver = None
        return self.path if self.frames else None

    def abort(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._saver is not None:
            self._saver.keep = False  # an aborted upload's video is dropped, not checked and kept
            self._saver.close()
            self._saver = None


@dataclass
class UploadResult:
    video: Path | None
    plot: np.ndarray
    events: list[Event]
    rows: list[list]
    csv: Path
    jsonl: Path
    frames: int
    fps: float
    faces: int
    seconds: float  # processing time
    summary: str
    warnings: list[str] = field(default_factory=list)


def frame_count(path: Path) -> int:
    """The container's frame count (an estimate; 0 when unknown), for the progress bar."""
    cap = cv2.VideoCapture(opencv_name(path))  # (open_upload has read it: a name OpenCV takes)
    try:
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    return int(n) if is_positive_number(n) else 0


def open_upload(path: Path, name: str, max_bytes: int | None) -> Capture:
    """The upload as a capture, or :class:`DemoError` saying what is wrong with it."""
    if not path.is_file():
        raise DemoError(f"{name}: no such file was uploaded")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DemoError(f"{name} is {size / 2**20:.1f} MB; this server accepts videos up to "
                        f"{round(max_bytes / 2**20, 2):g} MB (--max-upload-mb)")
    try:
        return Capture(parse_source(None, path))
    except RealtimeError as exc:
        # The reader's reason without its advice for the command line ("an image, not a video;
        # give the folder of numbered frames it belongs to"): a browser can send one file only.
        reason = str(exc).split(": ", 1)[-1].split("; ")[0]
        raise DemoError(f"{name} is not a video this demo can read ({reason}); try an .mp4, .avi, .mov or "
                        f".webm file") from None


class UploadCancelled(DemoError):
    """The page that uploaded the video was closed while it was analysed."""


@dataclass
class _Spotted:
    """What one pass over the upload gave."""

    events: list[Event]
    tracks: set[int]
    history: SignalHistory


def _spot_every_frame(capture: Capture, pipeline: Pipeline, writer: BrowserVideo, total: int,
                      progress: Callable[[float, str], None] | None,
                      cancelled: Callable[[], bool] | None = None) -> _Spotted:
    """Every frame through the pipeline and onto the annotated video, the progress bar fed.
    ``cancelled`` is asked before each frame: the page that asked was closed, so nobody waits for
    the result, and the upload slot (one at a time) must go to the next page now."""
    overlay = OverlayState.for_spotter(pipeline.spotter, shown_width=SHOWN_WIDTH)
    spotted = _Spotted([], set(), SignalHistory())
    start = time.monotonic()
    for frame in capture:
        if cancelled is not None and cancelled():
            raise UploadCancelled(f"analysis stopped at frame {pipeline.frames}"
                                  f"{f' of ~{total}' if total else ''}: its page was closed")
        result = pipeline.step(frame)
        spotted.history.update(pipeline.spotter)
        spotted.events += result.events
        spotted.tracks.update(f.track for f in result.faces)
        elapsed = max(time.monotonic() - start, 1e-6)
        writer.write(overlay.draw(frame.image, result.faces, spotted.history.recent(overlay.signal_samples),
                                  result.events, {"fps": pipeline.frames / elapsed, "spotter": pipeline.spotter.name,
                                                  "untrained": pipeline.spotter.trained is False},
                                  frame.timestamp))
        if progress is not None and (pipeline.frames % 10 == 0):
            fraction = min(0.99, pipeline.frames / total) if total else 0.5
            progress(fraction, f"frame {pipeline.frames}{f' of ~{total}' if total else ''}: "
                               f"{len(spotted.events)} events so far")
    spotted.events += pipeline.finish()
    spotted.history.update(pipeline.spotter)
    return spotted


def analyse_video(path: str | Path, settings: Settings, factory: PipelineFactory, out_dir: Path,
                  max_bytes: int | None = None, name: str | None = None,
                  progress: Callable[[float, str], None] | None = None,
                  cancelled: Callable[[], bool] | None = None) -> UploadResult:
    """Spot micro-expressions in the whole video; raises :class:`DemoError` with one clear line
    for anything the user can fix (not a video, no face, too large), :class:`UploadCancelled`
    (its files removed, the video reader and MediaPipe released) once ``cancelled()`` says so."""
    path = Path(path)
    name = name or path.name
    capture = open_upload(path, name, max_bytes)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem or "video"
    csv_path, jsonl_path = out_dir / f"{stem}_megc.csv", out_dir / f"{stem}_events.jsonl"
    try:
        untrained = settings.spotter == "fgsl" and factory.trained is False  # marked as realtime.cam --events does
        sinks = [CsvSink(csv_path, stem, stem), JsonlSink(jsonl_path, {"untrained": True} if untrained else None)]
        pipeline = factory.pipeline(settings, sinks)
    except BaseException:
        capture.stop()
        raise
    writer = BrowserVideo(out_dir / f"{stem}_annotated.mp4", capture.fps)
    start = time.monotonic()
    ok = False
    reported = frame_count(path)
    try:
        spotted = _spot_every_frame(capture, pipeline, writer, reported, progress, cancelled)
        ok = True
    except UploadCancelled as exc:
        raise UploadCancelled(f"{name}: {exc}") from None
    except RealtimeError as exc:
        raise DemoError(f"{name}: {str(exc).split(': ', 1)[-1]}") from None
    finally:
        capture.stop()
        if not ok:
            pipeline.tracker.close()  # MediaPipe (finish() does it for a whole video)
            writer.abort()
        pipeline.close()
    video = writer.close()
    frames, fps, events = pipeline.frames, capture.fps, spotted.events
    if pipeline.last_face_s is None:
        raise DemoError(f"no face found in the {frames} frames of {name}: the spotter needs a visible, roughly "
                        f"frontal face")
    seconds = time.monotonic() - start
    # What the reader found and warned about (fgsl.data.frames: a cut-off end, which OpenCV ends
    # like a finished stream, or a variable frame rate), as realtime.cam says it; its warnings
    # themselves go to the server's log, from the reading thread.
    notes = [f"{name}: {reason}" for reason in capture.notes]
    short = too_short(frames, fps)
    if short is not None:
        notes.append(f"{name}: {short}")
    series = {t: (idx / fps, v) for t, (idx, v) in spotted.history.series().items()}
    micro = sum(e.kind == "micro" for e in events)
    plot = signal_plot(series, events, threshold=pipeline.spotter.signal_threshold(),
                       span=(0.0, max(frames - 1, 1) / fps),
                       ylabel="motion (x noise)",
                       title=f"{name}: motion signal per face; dashed: threshold; "
                             f"shaded: spotted (red micro, grey macro)")
    summary = (f"**{len(events)} events** ({micro} micro-expressions) in {frames} frames "
               f"({frames / fps:.1f} s of video) from {len(spotted.tracks)} face track(s), spotted with the "
               f"{pipeline.spotter.name} spotter in {seconds:.1f} s ({frames / max(seconds, 1e-6):.1f} frames/s).")
    if not writer.playable:
        summary += " The annotated video is mp4v (ffmpeg is not installed): download it to play it."
    summary = "".join(f"**Warning: {note}.**\n\n" for note in notes) + summary
    return UploadResult(video, plot, events, event_rows(events), csv_path, jsonl_path, frames, fps,
                        len(spotted.tracks), seconds, summary, notes)
