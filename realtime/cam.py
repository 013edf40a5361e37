"""``python -m realtime.cam``: spot micro-expressions live from a webcam or a video file.

The capture thread reads frames; the main thread runs :class:`~realtime.pipeline.Pipeline`
on each (faces -> buffers -> spotter -> events), writes events to the console, ``--events``
(JSONL) and ``--csv`` (MEGC) as soon as each is final, and draws the overlay (a window, or
``--save`` a video, or ``--headless`` nothing). Ctrl-C (or SIGTERM, SIGHUP) ends cleanly with a summary.

Without ``--weights`` the spotter is the training-free optical-flow spotter; it says so.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

from fgsl.startup import quiet_exit, say, startup_imports

from .interrupts import STILL_FINISHING, TERMINATING, interrupt_once

# Importing torch, OpenCV and MediaPipe takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from fgsl.cli import (MAX_FPS, MIN_FPS, ArgumentParser, HelpFormatter, UsageError, at_least, check_output, frame_rate,
                          non_negative_number, positive_int, register_user_error, run, subject_name)
    from fgsl.data.frames import IMAGE_SUFFIXES
    from fgsl.files import same_file
    from fgsl.infer import say_unmatched, table_names, truth_keys

    from .capture import Capture, CaptureSource, FileSource, parse_source
    from .events import ConsoleSink, CsvSink, DeferredSink, JsonlSink, Sink, SinkError
    from .face import DEFAULT_MAX_FACES, MODEL_PATH
    from .overlay import Display, OverlayState, VideoSaver
    from .pipeline import Pipeline
    from .rate import RecentRate
    from .signal_history import SignalHistory
    from .spotters import add_cache_flag, add_spotter_flags, make_spotter
    from .spotters.fgsl import UNTRAINED_BANNER
    from .types import RealtimeError, too_short

register_user_error(RealtimeError)

DISCLAIMER = "research tool: spotted facial movements are not evidence of deception or of what a person feels"


@dataclass
class Summary:
    frames: int
    seconds: float
    fps: float
    dropped: int
    events: int
    micro: int
    failure: RealtimeError | None = None  # the source failed mid-stream (events were kept)
    interrupted: bool = False  # Ctrl-C or q: the user ended it

    def line(self) -> str:
        return (f"summary: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                f"{self.dropped} dropped, {self.events} events ({self.micro} micro)")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m realtime.cam", description=__doc__.split("\n\n")[0],
                       formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", type=at_least(0), default=None, help="camera index (default 0 when no --source)")
    src.add_argument("--source", help="video file, folder of numbered frames (with --fps), stream URL, or camera device "
                          "path (/dev/video2) instead of a camera index")
    p.add_argument("--fps", type=frame_rate, default=None,
                   help=f"frame rate ({MIN_FPS:g}-{MAX_FPS:g}) of a frame folder; overrides a video file's own rate; "
                        "requested from a camera")
    p.add_argument("--realtime", action="store_true", help="pace a file at its own frame rate (default: as fast as possible)")
    add_spotter_flags(p)
    add_cache_flag(p)
    p.add_argument("--max-faces", type=positive_int, default=DEFAULT_MAX_FACES, help="faces tracked at once")
    p.add_argument("--face-model", default=None,
                   help="MediaPipe face landmarker bundle (default: the one shipped in realtime/models/)")
    p.add_argument("--headless", action="store_true", help="no window: print events only")
    p.add_argument("--save", help="write the annotated video here (.mp4, .avi, .mov, .mkv or .m4v)")
    p.add_argument("--events", help="write each event as one JSON line to this file (flushed per event)")
    p.add_argument("--csv", help="write micro-expressions as a MEGC submission CSV")
    p.add_argument("--subject", type=subject_name, help="subject column of --csv (default: the video's name)")
    p.add_argument("--subjects-from", metavar="GT.csv",
                   help="take --csv's subject from this ground-truth CSV (the row of the --source video's name), "
                        "as MEGC scoring needs")
    p.add_argument("--no-face-warning", type=non_negative_number, default=5.0, metavar="S",
                   help="print a warning when no face has been seen for S seconds; 0: never")
    p.add_argument("--quiet", action="store_true", help="no console event lines (files and summary still written)")
    return p


def open_sinks(args: argparse.Namespace, untrained: bool, subject: str, video: str, opened: ExitStack) -> list[Sink]:
    """The files asked for, each made at the first face (:class:`DeferredSink`) and closed by
    ``opened``, then the console (last: a terminal that blocks, paused or scrolled back, is
    where Ctrl-C comes, and the files have the event by then); with ``untrained`` weights every
    line says so."""
    sinks: list[Sink] = []
    if args.events:
        extra = {"untrained": True} if untrained else None
        sinks.append(opened.enter_context(closing(DeferredSink(lambda: JsonlSink(args.events, extra)))))
    if args.csv:
        sinks.append(opened.enter_context(closing(DeferredSink(lambda: CsvSink(args.csv, subject, video)))))
    if not args.quiet:
        sinks.append(ConsoleSink(tag=f"  [{UNTRAINED_BANNER}]" if untrained else ""))
    return sinks


def start_outputs(sinks: list[Sink], saver: VideoSaver | None) -> None:
    """The first face is tracked: make the event files (truncating an earlier run's) and let
    the ``--save`` video replace an earlier one when it closes. Until then a run that ends
    without a face, failed or stopped, has touched none of them."""
    for sink in sinks:
        if isinstance(sink, DeferredSink):
            sink.open()
    if saver is not None:
        saver.keep = True


def named(args: argparse.Namespace, *flags: str) -> list[str]:
    """``--flag PATH`` of each of ``flags`` given, as messages name the files."""
    return [f"--{flag} {getattr(args, flag)}" for flag in flags if getattr(args, flag)]


def console_failure(args: argparse.Namespace, sinks: list[Sink]) -> RealtimeError | None:
    """The console's write error (not a closed pipe) as the run's error line, naming the files
    that still have every event: a log on a full disk must not pass for a whole one."""
    failure = next((s.failure for s in sinks if isinstance(s, ConsoleSink) and s.failure), None)
    if failure is None:
        return None
    files = named(args, "events", "csv")
    kept = f"; {' and '.join(files)} {'has' if len(files) == 1 else 'have'} every event" if files else ""
    return RealtimeError(f"stdout: cannot write event lines ({failure.strerror or failure}), "
                         f"so the console stopped at the first that failed{kept}")


def check_outputs(args: argparse.Namespace, source: CaptureSource) -> None:
    """Refuse bad output paths while nothing is loaded or written yet: one that cannot be
    written, one that is an input (the source video, a frame of the source folder, the face
    model, shipped or given, a file of ``--weights``), or one named twice."""
    from engines.export import folder_files

    outputs = [(f"--{flag}", Path(getattr(args, flag))) for flag in ("save", "events", "csv") if getattr(args, flag)]
    inputs = [("--source", source.path)] if isinstance(source, FileSource) else []
    inputs += [("--subjects-from", args.subjects_from), ("--face-model", args.face_model or MODEL_PATH)]
    inputs += [("--weights", path) for path in folder_files(args.weights)]
    folder = source.path if isinstance(source, FileSource) and source.path.is_dir() else None
    for i, (flag, path) in enumerate(outputs):
        check_output(flag, path, inputs)
        if folder is not None and path.suffix.lower() in IMAGE_SUFFIXES and same_file(path.parent, folder):
            raise UsageError(f"{flag} {path} would overwrite a frame of --source {folder} (or be read as one); "
                             "write it elsewhere")
        for other_flag, other in outputs[:i]:
            if same_file(path, other):
                raise UsageError(f"{other_flag} and {flag} both name {path}; give each its own file")


def stream(args: argparse.Namespace, capture: Capture, pipeline: Pipeline,
           display: Display | None = None, saver: VideoSaver | None = None,
           on_first_face: Callable[[], None] = lambda: None, finishing: Callable[[], None] = lambda: None) -> Summary:
    """Run the pipeline over the capture until it ends, the user quits, or Ctrl-C;
    ``on_first_face`` is called after the first step that tracked a face, ``finishing`` (from
    :func:`interrupt_once`) before the last events are finished: a Ctrl-C then (a file's end
    came first) is held, not allowed to lose them.

    The caller owns (and closes) the capture, the pipeline, the window and the saver."""
    overlay = OverlayState.for_spotter(pipeline.spotter) if (display or saver) else None
    history = SignalHistory(max_frames=2 * overlay.signal_samples, max_tracks=16) if overlay else None
    recent = RecentRate()  # the fps shown: over the last frames, not since the start
    start = time.monotonic()
    warned = False
    failure: RealtimeError | None = None
    interrupted = False
    started = False
    try:
        for frame in capture:
            taken = time.monotonic()
            result = pipeline.step(frame)
            if result.faces and not started:
                started = True
                on_first_face()
            seen = pipeline.last_face_s if pipeline.last_face_s is not None else 0.0
            if args.no_face_warning and frame.timestamp - seen >= args.no_face_warning and not warned:
                say(f"warning: no face in view for {args.no_face_warning:g} s ({capture.name})")
                warned = True
            elif result.faces:
                warned = False
            if overlay is not None and history is not None:
                stats = capture.stats
                history.update(pipeline.spotter)
                recent.add(taken)
                # Latency: from the camera's capture (its queue keeps the newest frames only, so
                # waiting there is part of it); a file's frames wait in a read-ahead queue that
                # says nothing about the spotter, so theirs starts when the loop takes them.
                since = frame.captured if capture.live else taken
                image = overlay.draw(frame.image, result.faces, history.recent(overlay.signal_samples), result.events,
                                     {"fps": recent.rate(), "dropped": stats.dropped,
                                      "latency_ms": (time.monotonic() - since) * 1000,
                                      "spotter": pipeline.spotter.name, "untrained": pipeline.spotter.trained is False,
                                      "status": stats.status},
                                     frame.timestamp)
                if saver is not None:  # a camera's file keeps the camera's clock over dropped frames
                    saver.write(image, frame.timestamp if capture.live else None)
                if display is not None and not display.show(image):
                    interrupted = True
                    break
    except KeyboardInterrupt:
        say("interrupted: finishing open events")
        interrupted = True
    except RealtimeError as exc:  # the source failed (camera gone for good): keep what was spotted
        failure = exc
    finishing()
    try:
        pipeline.finish()
    except SinkError as exc:  # an event file failed while the last events were written
        failure = failure or exc
    seconds = time.monotonic() - start
    return Summary(pipeline.frames, seconds, pipeline.frames / max(seconds, 1e-6), capture.stats.dropped,
                   pipeline.event_count, pipeline.micro_count, failure, interrupted)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(finishing: Callable[[], None]) -> int:
        from .face import FaceTracker

        device = 0 if args.source is None and args.device is None else args.device
        source = parse_source(device, args.source, fps=args.fps)
        if not args.csv and (args.subject or args.subjects_from):  # (they name --csv's rows; nothing else has them)
            flag = "--subject" if args.subject else "--subjects-from"
            raise UsageError(f"{flag} names the rows of --csv; without --csv it would be ignored")
        check_outputs(args, source)
        if args.source:  # the CSV's columns, as fgsl.infer names them (a bad --subjects-from fails now)
            truth = truth_keys(args.subjects_from)
            names = table_names([args.source], truth, args.subject)
            say_unmatched(names, truth)
            subject, video = names[args.source]
        else:
            video = f"camera{device}"
            subject = args.subject or video
        # Everything opened is closed on every way out (MediaPipe's landmarker included: left
        # to the garbage collector at exit, it prints a traceback of its own). Files are
        # opened (and so truncated) only once the first face is tracked, and the --save video
        # replaces an earlier one only then: a run that cannot start, or ends (with "no face
        # found", or a failing source) before any face, leaves an earlier run's files as they were.
        with ExitStack() as opened:
            capture = Capture(source, realtime=args.realtime,
                              on_outage=lambda line: say(f"warning: {line}"))
            opened.callback(capture.stop)
            saver = (opened.enter_context(VideoSaver(args.save, capture.fps, keep=False, name=f"--save {args.save}"))
                     if args.save else None)
            display = None if args.headless else opened.enter_context(Display("micro-expression spotter (q to quit)"))
            spotter = make_spotter(args)
            tracker = opened.enter_context(FaceTracker(
                max_faces=args.max_faces, crop_size=spotter.crop_size, model_path=args.face_model))
            untrained = spotter.trained is False
            sinks = open_sinks(args, untrained, subject, video, opened)
            say(f"spotting {capture.name} ({capture.fps:g} fps) with the {spotter.describe()}")
            say(DISCLAIMER)
            pipeline = Pipeline(tracker, spotter, sinks)
            summary = stream(args, capture, pipeline, display, saver, lambda: start_outputs(sinks, saver), finishing)
            if saver is not None:  # (now: a video that cannot be written whole is the run's error)
                try:
                    saver.close()
                except RealtimeError as exc:
                    summary.failure = summary.failure or exc
        outputs = named(args, "events", "csv", "save")
        if pipeline.last_face_s is None and summary.interrupted and outputs:  # (no face, no error: say why)
            say(f"warning: no face was tracked: {' and '.join(outputs)} left as they were")
        short = None if capture.live or summary.interrupted else too_short(summary.frames, capture.fps)
        if short is not None:
            say(f"warning: {capture.name}: {short}")
        say(summary.line() + (f" [{UNTRAINED_BANNER}]" if untrained else ""))
        failure = summary.failure or console_failure(args, sinks)
        if failure is not None:
            raise failure
        if pipeline.last_face_s is None and not summary.interrupted:  # (stopped before one came: no error)
            raise RealtimeError(f"{capture.name}: no face found in {summary.frames} frames")
        return 0

    # Once Ctrl-C has ended the stream, later ones are held until the run has returned: the
    # finishing writes the open events, closes every file and prints the summary.
    with interrupt_once(("SIGINT", *TERMINATING), later=STILL_FINISHING) as finishing:
        return run(lambda _: body(finishing))


if __name__ == "__main__":
    quiet_exit(main())
