"""``python -m realtime.cam``: spot micro-expressions live from a webcam or a video file.

The capture thread reads frames; the main thread runs :class:`~realtime.pipeline.Pipeline`
on each (faces -> buffers -> spotter -> events), writes events to the console, ``--events``
(JSONL) and ``--csv`` (MEGC) as soon as each is final, and draws the overlay (a window, or
``--save`` a video, or ``--headless`` nothing). Ctrl-C ends cleanly with a summary.

Without ``--weights`` the spotter is the training-free optical-flow spotter; it says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engines.base import add_engine_device_flag
from fgsl.cli import UsageError, register_user_error, run

from .capture import Capture, parse_source
from .events import ConsoleSink, CsvSink, JsonlSink, Sink
from .pipeline import Pipeline
from .spotters import SPOTTERS, make_spotter
from .types import RealtimeError

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

    def line(self) -> str:
        return (f"summary: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                f"{self.dropped} dropped, {self.events} events ({self.micro} micro)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m realtime.cam", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", type=int, default=None, help="camera index (default 0 when no --source)")
    src.add_argument("--source", help="video file, folder of numbered frames, or stream URL instead of a camera")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a frame folder; overrides a video file's own rate; requested from a camera")
    p.add_argument("--realtime", action="store_true", help="pace a file at its own frame rate (default: as fast as possible)")
    p.add_argument("--spotter", choices=SPOTTERS, default=None, help="default: fgsl with --weights, else flow")
    p.add_argument("--weights", help="FGSL run folder (model.safetensors + config.json); selects the fgsl spotter")
    p.add_argument("--allow-untrained", action="store_true", help="let the fgsl spotter use untrained weights (benchmarks only)")
    p.add_argument("--preset", default="realtime", help="FGSL preset for --allow-untrained without --weights")
    p.add_argument("--backend", default="auto", help="FGSL engine backend (auto, torch, ...)")
    add_engine_device_flag(p)
    p.add_argument("--no-cache", action="store_true",
                   help="FGSL: recompute every chunk of every window (default: encode each 16-frame chunk once)")
    p.add_argument("--sensitivity", type=float, default=1.0, help=">1 finds weaker movements, <1 raises fewer false alarms (both spotters)")
    p.add_argument("--max-faces", type=int, default=4, help="faces tracked at once")
    p.add_argument("--face-model", default=None,
                   help="MediaPipe face landmarker bundle (default: the one shipped in realtime/models/)")
    p.add_argument("--headless", action="store_true", help="no window: print events only")
    p.add_argument("--save", help="write the annotated video here (.mp4)")
    p.add_argument("--events", help="write each event as one JSON line to this file (flushed per event)")
    p.add_argument("--csv", help="write micro-expressions as a MEGC submission CSV")
    p.add_argument("--subject", help="subject column of --csv (default: the video's name)")
    p.add_argument("--no-face-warning", type=float, default=5.0, metavar="S",
                   help="print a warning when no face has been seen for S seconds")
    p.add_argument("--quiet", action="store_true", help="no console event lines (files and summary still written)")
    return p


def open_sinks(args: argparse.Namespace, video: str) -> list[Sink]:
    sinks: list[Sink] = [] if args.quiet else [ConsoleSink()]
    if args.events:
        sinks.append(JsonlSink(args.events))
    if args.csv:
        sinks.append(CsvSink(args.csv, args.subject or video, video))
    return sinks


def stream(args: argparse.Namespace, capture: Capture, pipeline: Pipeline) -> Summary:
    """Run the pipeline over the capture until it ends, the user quits, or Ctrl-C."""
    from .overlay import Display, OverlayState, VideoSaver

    display = None if args.headless else Display("micro-expression spotter (q to quit)")
    saver = VideoSaver(args.save, capture.fps) if args.save else None
    overlay = OverlayState(signal_rate=pipeline.spotter.fps) if (display or saver) else None
    start = time.monotonic()
    warned = False
    failure: RealtimeError | None = None
    try:
        try:
            for frame in capture:
                result = pipeline.step(frame)
                seen = pipeline.last_face_s if pipeline.last_face_s is not None else 0.0
                if frame.timestamp - seen >= args.no_face_warning and not warned:
                    print(f"warning: no face in view for {args.no_face_warning:g} s ({capture.name})", file=sys.stderr, flush=True)
                    warned = True
                elif result.faces:
                    warned = False
                if overlay is not None:
                    stats = capture.stats
                    elapsed = max(time.monotonic() - start, 1e-6)
                    image = overlay.draw(frame.image, result.faces, pipeline.signals(), result.events,
                                         {"fps": pipeline.frames / elapsed, "dropped": stats.dropped,
                                          "latency_ms": (time.monotonic() - frame.captured) * 1000,
                                          "spotter": pipeline.spotter.name, "status": stats.status},
                                         frame.timestamp)
                    if saver is not None:
                        saver.write(image)
                    if display is not None and not display.show(image):
                        break
        except KeyboardInterrupt:
            print("interrupted: finishing open events", file=sys.stderr)
        except RealtimeError as exc:  # the source failed (camera gone for good): keep what was spotted
            failure = exc
        pipeline.finish()
    finally:
        capture.stop()
        pipeline.close()
        if saver is not None:
            saver.close()
        if display is not None:
            display.close()
    seconds = time.monotonic() - start
    return Summary(pipeline.frames, seconds, pipeline.frames / max(seconds, 1e-6), capture.stats.dropped,
                   pipeline.event_count, pipeline.micro_count, failure)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_: list[str] | None) -> int:
        from .face import MODEL_SHA256, FaceTracker

        if args.max_faces < 1:
            raise UsageError("--max-faces must be at least 1")
        device = 0 if args.source is None and args.device is None else args.device
        source = parse_source(device, args.source, fps=args.fps)
        capture = Capture(source, realtime=args.realtime)
        spotter = make_spotter(args)
        video = Path(args.source).stem if args.source else f"camera{device}"
        tracker = FaceTracker(max_faces=args.max_faces, crop_size=spotter.crop_size, model_path=args.face_model,
                              sha256=MODEL_SHA256 if args.face_model is None else None)
        print(f"spotting {capture.name} ({capture.fps:g} fps) with the {spotter.describe()}", file=sys.stderr)
        print(DISCLAIMER, file=sys.stderr)
        pipeline = Pipeline(tracker, spotter, open_sinks(args, video))
        summary = stream(args, capture, pipeline)
        print(summary.line(), file=sys.stderr)
        if summary.failure is not None:
            raise summary.failure
        if pipeline.last_face_s is None:
            raise RealtimeError(f"{capture.name}: no face found in {summary.frames} frames")
        return 0

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
