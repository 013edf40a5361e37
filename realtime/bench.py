"""``python -m realtime.bench``: how fast and how well the live spotter runs on this machine.

It drives the same :class:`~realtime.pipeline.Pipeline` as ``realtime.cam`` (capture thread ->
faces -> buffers -> spotter -> events) over a video file as fast as the machine allows, and
reports end-to-end frames per second, what that is in multiples of real time, per-stage latency
percentiles, how long after a movement's offset its event was emitted, dropped frames and peak
memory. A file is evidence, so capture never drops its frames: every frame is processed and
``x_realtime >= 1`` means a live camera at the video's frame rate would keep up.

* ``--faces N`` tiles N copies of each frame in a grid, so N faces are tracked at once (the
  cost of a crowded scene without needing a video of one).
* ``--repeat R`` plays the video R times in one stream (frame numbers and stream time run on),
  for runs long enough to reach steady state.
* ``--synthetic`` first injects micro-expressions with known onset/offset into face crops of
  the video (:mod:`fgsl.data.synthetic`, held-out ``test`` part, 12 px of a 128 px crop by
  default as ``docs/benchmarks.md`` uses), runs on those videos and also scores the spotted
  micro-expressions against their ground truth (a MEGC CSV, :func:`fgsl.evaluate.evaluate`,
  ``strict`` mode), so speed and accuracy are measured on the same run.

Model loading and synthetic-set generation are outside the timed part; opening and decoding
the video is inside it (decoding overlaps processing in the capture thread, as it does live).
Capture reads one frame ahead (``queue_size=1``): with its usual 16-frame read-ahead, a run
that processes slower than the file decodes would report as ``capture`` latency the time each
frame waits behind 16 decoded ones, a backlog a live camera never builds (it drops instead).
Run as fast as possible, ``capture`` is still mostly the wait behind the frame or two decoded
ahead (about 1-2 frames' processing time), not the cost of decoding.
``--realtime`` paces the file at its own frame rate like a camera: ``fps`` is then capped at
the video's rate (``x_realtime`` near 1 means it kept up) and the other stages run without a
backlog, as they would live. (Capture stamps a paced frame before its wait for its time, so
there ``capture`` includes up to one frame interval of pacing.)
With ``--json`` the last line of stdout is one JSON object (keys in :func:`report`); the
table above it is for people. Its ``backend`` is ``"opencv"`` for the flow spotter (OpenCV's
optical flow, no engine) and the engine's ``describe()`` object for FGSL (``backend``,
``device``, ``precision`` and the like), since an engine has more to say than its name.
``--faces N`` tiles the frame N times and tracks every face of every tile (up to
:data:`~realtime.face.DEFAULT_MAX_FACES` per tile).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import resource
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, say, startup_imports

from .interrupts import TERMINATING, interrupt_once

#: What a Ctrl-C says while the benchmark closes after the first one.
STILL_CLOSING = "still closing the face tracker (Ctrl-\\ quits at once)"

# Importing torch, OpenCV and MediaPipe takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import cv2
    import numpy as np

    from engines.machine import machine_info
    from fgsl.cli import ArgumentParser, HelpFormatter, UsageError, first_flag_given, at_least, positive_int, positive_number, register_user_error, run
    from fgsl.data.frames import open_source
    from fgsl.data.synthetic import MAX_FRAMES, Recipe, make_set

    from .capture import Capture, parse_source
    from .pipeline import STAGES, Pipeline
    from .spotters import add_spotter_flags, make_spotter
    from .spotters.base import Spotter
    from .spotters.fgsl import UNTRAINED_BANNER
    from .types import Event, Frame, RealtimeError

register_user_error(RealtimeError)

#: The bundled sample (``samples/README.md``), found from this file so any cwd works.
SAMPLE_VIDEO = Path(__file__).resolve().parents[1] / "samples" / "pyfeat_single_face.mp4"
MAX_TILED_FACES = 16  # copies of a frame --faces may tile (a 4x4 grid)


def add_recipe_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The synthetic set's recipe flags, read with ``--synthetic`` only (:func:`recipe_flag`)."""
    parser.add_argument("--amplitude", type=positive_number, default=12.0,
                        help="peak displacement, pixels of the 128 px face crop (at most 16)")
    parser.add_argument("--count", type=positive_int, default=4, help="synthetic videos per face")
    parser.add_argument("--frames", type=positive_int, default=192,
                        help=f"frames per synthetic video ({Recipe.max_frames}-{MAX_FRAMES})")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the synthetic set")
    parser.add_argument("--still", action="store_true",
                        help="hold one real frame per video (a still face) instead of playing it")


def recipe_flag(args: argparse.Namespace) -> str | None:
    """The first recipe flag (:func:`add_recipe_flags`) ``args`` sets, or None
    (:func:`fgsl.cli.first_flag_given`): without ``--synthetic`` it would be ignored without a word."""
    return first_flag_given(args, add_recipe_flags)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m realtime.bench", description=__doc__.split("\n\n")[0],
                       formatter_class=HelpFormatter)
    p.add_argument("--video", default=None,
                   help=f"video file (default: the bundled {SAMPLE_VIDEO.name})")
    # At most a 4x4 grid: MediaPipe finds no face in the bundled sample's tiles from 3x3 on, and
    # --faces 1000000 asked for a 644 GiB frame.
    p.add_argument("--faces", type=at_least(1, MAX_TILED_FACES), default=1,
                   help=f"tile N copies of each frame in a grid, at most {MAX_TILED_FACES} (every face of each tile "
                        "is tracked)")
    p.add_argument("--repeat", type=positive_int, default=1, help="play the video R times in one stream")
    add_spotter_flags(p)
    p.add_argument("--realtime", action="store_true", help="pace the file at its own frame rate, like a camera")
    syn = p.add_argument_group("synthetic micro-expressions (adds spotting F1 to the report)")
    syn.add_argument("--synthetic", action="store_true",
                     help="inject micro-expressions into the video's face and run on those")
    add_recipe_flags(syn)
    p.add_argument("--compare-backend", default=None, metavar="BACKEND",
                   help="fgsl: run the same video again on this backend (e.g. torch) and report the speed ratio")
    p.add_argument("--cached-only", action="store_true",
                   help="fgsl: skip the second pass without the chunk cache (by default both are reported)")
    p.add_argument("--json", action="store_true", help="end stdout with the report as one JSON line")
    return p


# ------------------------------------------------------------------------------ one stream
@dataclass
class StreamRun:
    """What one stream (one video, repeated and tiled) produced; the report aggregates these."""

    video: Path
    fps: float = 0.0  # the video's own frame rate
    frames: int = 0
    frames_per_pass: int = 0
    seconds: float = 0.0  # processing wall time: first frame requested -> finish() done
    dropped: int = 0
    timings: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    live_events: list[Event] = field(default_factory=list)  # emitted while frames still came
    flushed_events: list[Event] = field(default_factory=list)  # emitted by finish() at the end
    tile_of_track: dict[int, int] = field(default_factory=dict)
    most_faces: int = 0  # most faces seen in one frame
    cache_bytes_per_track: int = 0  # FGSL chunk cache: the most one track held

    @property
    def events(self) -> list[Event]:
        return self.live_events + self.flushed_events


def grid(copies: int) -> tuple[int, int]:
    """(rows, columns) of the tiling: as square as possible, so faces stay large in the frame
    (MediaPipe's short-range detector misses faces under about a tenth of the frame)."""
    cols = math.ceil(math.sqrt(copies))
    return math.ceil(copies / cols), cols


def tile(frame: Frame, copies: int) -> Frame:
    """``copies`` copies of the frame's image in a grid (the benchmark's extra faces); cells
    beyond ``copies`` stay black."""
    if copies == 1:
        return frame
    rows, cols = grid(copies)
    h, w = frame.image.shape[:2]
    canvas = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k in range(copies):
        r, c = divmod(k, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = frame.image
    return Frame(frame.index, frame.timestamp, frame.captured, canvas)


def tile_index(box: tuple[float, float, float, float], shape: tuple[int, ...], copies: int) -> int:
    """Which tile a face box lies in (its centre), for scoring each tile as its own video."""
    rows, cols = grid(copies)
    h, w = shape[:2]
    col = min(cols - 1, max(0, int((box[0] + box[2]) / 2 // w)))
    row = min(rows - 1, max(0, int((box[1] + box[3]) / 2 // h)))
    return min(copies - 1, row * cols + col)


def run_stream(video: Path, spotter: Spotter, faces: int, repeat: int, realtime: bool = False) -> StreamRun:
    """Process ``video`` ``repeat`` times as one stream of ``faces`` tiled copies.

    Each pass opens a fresh :class:`Capture` (files never drop frames); frame numbers and
    stream times of later passes continue where the previous pass ended, so windows, tracks
    and event times behave as in one long recording.
    """
    from .face import DEFAULT_MAX_FACES, FaceTracker

    out = StreamRun(video)
    # Every face of every tile: a video with two people tiled twice has four. The tracker is
    # closed however the run ends (pipeline.finish closes it at the end of the stream): left to
    # MediaPipe's __del__ at interpreter exit, a Ctrl-C printed its traceback after `interrupted`.
    tracker = FaceTracker(max_faces=faces * DEFAULT_MAX_FACES, crop_size=spotter.crop_size)
    pipeline = Pipeline(tracker, spotter)
    with tracker, closing(pipeline):
        start = time.perf_counter()
        for k in range(repeat):
            capture = Capture(parse_source(None, video), realtime=realtime, queue_size=1)
            out.fps = capture.fps
            offset = k * out.frames_per_pass
            try:
                for frame in capture:
                    index = frame.index + offset
                    frame = Frame(index, index / capture.fps, frame.captured, frame.image)
                    result = pipeline.step(tile(frame, faces))
                    out.frames += 1
                    for stage in STAGES:
                        out.timings[stage].append(result.timings_ms[stage])
                    out.live_events += result.events
                    out.most_faces = max(out.most_faces, len(result.faces))
                    if hasattr(spotter, "cache_bytes"):
                        held = max((spotter.cache_bytes(f.track) for f in result.faces), default=0)
                        out.cache_bytes_per_track = max(out.cache_bytes_per_track, held)
                    for face in result.faces:
                        out.tile_of_track.setdefault(face.track, tile_index(face.box, frame.image.shape, faces))
            finally:
                capture.stop()
                out.dropped += capture.stats.dropped
            if k == 0:
                out.frames_per_pass = out.frames
        out.flushed_events = pipeline.finish()
        out.seconds = time.perf_counter() - start
    if not out.most_faces:  # (the speed of finding no face is no benchmark of the spotter)
        raise RealtimeError(f"{video}: no face found in {out.frames} frames: nothing to benchmark")
    return out


# ------------------------------------------------------------------------------ synthetic
def synthetic_recipe(args: argparse.Namespace) -> Recipe:
    """The ``--synthetic`` recipe, built (and so checked: one error line) before any model
    loads or any progress line says it is being made.

    The held-out ``test`` part of the source (its last quarter) is used, so FGSL weights
    trained on synthetic data made from the same video are not scored on training frames.
    """
    return Recipe(count=args.count, frames=args.frames, size=128, amplitude=args.amplitude,
                  part="test", events=True, still=args.still, seed=args.seed)


def make_synthetic(video: Path, folder: Path, recipe: Recipe) -> tuple[list[Path], Path]:
    """Write the synthetic set of ``recipe`` into ``folder``; return its videos and its annotations.csv."""
    made = make_set([video], folder, recipe, progress=False)
    if not made:
        raise UsageError(f"--count {recipe.count} --frames {recipe.frames}: the synthetic set holds no injected movement, "
                         "so there is nothing to score; give more --frames or --count")
    return sorted((folder / "videos").glob("*.avi")), folder / "annotations.csv"


def score(runs: list[StreamRun], annotations: Path, faces: int) -> dict[str, Any]:
    """Spotting TP/FP/FN/F1 of the micro events against the injected ground truth (strict mode).

    With tiles, each tile is its own video (``NAME_tileK``, the track's tile found from where
    its face is) with its own copy of the ground truth; with repeats the ground truth repeats
    with the frame numbers of each pass.
    """
    from fgsl.evaluate import MegcInterval, evaluate, read_intervals

    truth = read_intervals(annotations)
    subject_of = {g.video: g.subject for g in truth}
    by_name = {r.video.stem: r for r in runs}

    def name(video: str, tile_index: int) -> str:
        return video if faces == 1 else f"{video}_tile{tile_index}"

    gt_rows, pred_rows = [], []
    for g in truth:
        stream = by_name.get(g.video)
        passes = stream.frames // max(stream.frames_per_pass, 1) if stream else 1
        for k in range(faces):
            for p in range(passes):
                shift = p * stream.frames_per_pass if stream else 0
                gt_rows.append((g.subject, name(g.video, k), g.onset + shift, g.offset + shift, g.emotion))
    for video, stream in by_name.items():
        for e in stream.events:
            if e.kind == "micro":
                pred_rows.append((subject_of.get(video, video), name(video, stream.tile_of_track.get(e.track, 0)),
                                  e.onset, e.offset, e.label))
    result = evaluate([MegcInterval(*row) for row in gt_rows], [MegcInterval(*row) for row in pred_rows],
                      mode="strict")
    s = result["spotting"]
    return {"tp": s["tp"], "fp": s["fp"], "fn": s["fn"], "precision": round(s["precision"], 4),
            "recall": round(s["recall"], 4), "f1": round(s["f1"], 4), "mode": "strict"}


# ------------------------------------------------------------------------------ report
def percentiles(values: list[float], names: tuple[str, ...] = ("p50_ms", "p95_ms", "p99_ms"),
                qs: tuple[float, ...] = (50, 95, 99), digits: int = 3) -> dict[str, float] | None:
    if not values:
        return None
    return {n: round(float(v), digits) for n, v in zip(names, np.percentile(values, qs))}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def gpu_peak_mb() -> float | None:
    """Peak CUDA memory torch allocated, when torch is in use here and has a GPU; else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def backend_of(spotter: Spotter) -> Any:
    """``"opencv"`` for the flow spotter; the engine's ``describe()`` for FGSL."""
    if spotter.name == "flow":
        return "opencv"
    engine = getattr(spotter, "engine", None)
    if engine is not None and hasattr(engine, "describe"):
        return engine.describe()
    return spotter.describe() if hasattr(spotter, "describe") else None


def machine() -> dict[str, Any]:
    """The machine (:func:`engines.machine.machine_info`, the self-test's and demo.bench's too),
    with OpenCV's version: the flow spotter and the capture run on it."""
    return {**machine_info(), "opencv": cv2.__version__}


def speed(runs: list[StreamRun]) -> dict[str, float]:
    """Frames per second over ``runs``, and ``x_realtime``: that over the video's own rate."""
    frames, seconds = sum(r.frames for r in runs), sum(r.seconds for r in runs)
    fps = frames / seconds if seconds > 0 else 0.0
    return {"fps": round(fps, 3), "x_realtime": round(fps / runs[0].fps, 4) if runs and runs[0].fps else 0.0}


def report(runs: list[StreamRun], spotter: Spotter, args: argparse.Namespace, video: Path) -> dict[str, Any]:
    """The JSON report: speed, stage latency, event delay, memory, and what was measured."""
    frames = sum(r.frames for r in runs)
    seconds = sum(r.seconds for r in runs)
    video_fps = runs[0].fps if runs else 0.0
    stages = {s: percentiles([t for r in runs for t in r.timings[s]]) for s in STAGES}
    # Only events emitted while frames still arrived: finish() emits the rest at the stream's
    # end, a time set by where the video stops, not by how soon the spotter decided.
    delays = [e.delay_s for r in runs for e in r.live_events]
    events = [e for r in runs for e in r.events]
    delay = percentiles(delays, ("p50", "p95"), (50, 95), 4)
    return {
        **speed(runs),
        "video_fps": video_fps,
        "frames": frames,
        "seconds": round(seconds, 3),
        "dropped_frames": sum(r.dropped for r in runs),
        "stages": stages,
        "event_delay_s": None if delay is None else {**delay, "events": len(delays)},
        "events": len(events),
        "micro_events": sum(e.kind == "micro" for e in events),
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mb": gpu_peak_mb(),
        "spotter": spotter.name,
        "untrained": spotter.trained is False,  # FGSL on random weights: its events mean nothing
        "backend": backend_of(spotter),
        "faces": args.faces,
        "tracks": sum(len(r.tile_of_track) for r in runs),
        "max_faces_in_frame": max((r.most_faces for r in runs), default=0),
        "repeat": args.repeat,
        "paced": args.realtime,
        "video": str(video),
        "videos": len(runs),
        "synthetic": {"amplitude_px": args.amplitude, "crop_px": 128, "count": args.count,
                      "frames": args.frames, "seed": args.seed} if args.synthetic else None,
        "machine": machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def table(rep: dict[str, Any]) -> str:
    """The report for people."""
    backend = rep["backend"] if isinstance(rep["backend"], str) else json.dumps(rep["backend"])
    synthetic = f" (synthetic: {rep['videos']} videos)" if rep["synthetic"] else ""
    untrained = f" [{UNTRAINED_BANNER}]" if rep["untrained"] else ""
    lines = [
        f"video     {rep['video']}{synthetic}",
        f"spotter   {rep['spotter']} ({backend}){untrained}",
        f"faces     {rep['faces']} tiled, {rep['tracks']} tracks, repeat {rep['repeat']}",
        f"speed     {rep['frames']} frames in {rep['seconds']:.2f} s: {rep['fps']:.1f} fps = "
        f"{rep['x_realtime']:.2f}x real time at {rep['video_fps']:g} fps, {rep['dropped_frames']} dropped",
        "",
        f"{'stage':<10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}",
    ]
    for stage, p in rep["stages"].items():
        cells = [f"{p[k]:10.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")] if p else [f"{'-':>10}"] * 3
        lines.append(f"{stage:<10}" + "".join(cells))
    lines.append("")
    d = rep["event_delay_s"]
    delay = (f"; delay after offset p50 {d['p50']:.2f} s, p95 {d['p95']:.2f} s (of the {d['events']} emitted before "
             "the end of the stream)" if d else "; none emitted before the end of the stream")
    lines.append(f"events    {rep['events']} ({rep['micro_events']} micro){delay}")
    lines.append(f"memory    peak RSS {rep['peak_rss_mb']:.0f} MB" +
                 (f", GPU {rep['gpu_peak_mb']:.0f} MB" if rep["gpu_peak_mb"] is not None else ""))
    if "streaming" in rep:
        c, u = rep["streaming"]["cached"], rep["streaming"]["uncached"]
        lines.append(f"fgsl      chunk cache {c['x_realtime']:.2f}x real time (encoder p50 {c['encoder_ms']['p50']:.0f} ms "
                     f"per call, decoder p50 {c['decoder_ms']['p50']:.0f} ms, {c['cache_bytes_per_track'] / 1024:.0f} KiB "
                     f"per track) vs no cache {u['x_realtime']:.2f}x (window p50 {u['window_ms']['p50']:.0f} ms): "
                     f"{rep['streaming']['cached_over_uncached']}x")
    if "compare" in rep:
        c = rep["compare"]
        name = c["backend"]["backend"] if isinstance(c["backend"], dict) else c["backend"]
        lines.append(f"compare   {name}: {c['x_realtime']:.2f}x real time; this run is {c['ratio']}x that")
    if "spotting" in rep:
        s = rep["spotting"]
        lines.append(f"spotting  TP {s['tp']} FP {s['fp']} FN {s['fn']}: F1 {s['f1']:.3f} (strict){untrained}")
    return "\n".join(lines)


def warm_up(spotter: Spotter) -> None:
    """Run the FGSL engine's graphs once on zeros, so session creation, an ONNX export into the
    engine cache or first-call allocations are not timed (model loading is not what we measure)."""
    engine = getattr(spotter, "engine", None)
    if engine is None:
        return
    cfg = engine.cfg
    size = cfg.image_size
    if getattr(spotter, "cached", False):
        out = engine.encode_chunk(np.zeros((1, 3, 16, size, size), np.float32))
        reps = cfg.window_frames // 16
        engine.decode_window(np.ascontiguousarray(np.concatenate([out["final"]] * reps, axis=1)),
                             np.ascontiguousarray(np.concatenate([out["taps"]] * reps, axis=2)))
    else:
        engine.infer(np.zeros((1, 3, cfg.window_frames, size, size), np.float32))


def compare_backend(args: argparse.Namespace, video: Path, rep: dict[str, Any], other: Spotter) -> dict[str, Any]:
    """``other``, the same FGSL spotter on another backend (opened before the first pass, so a
    backend that cannot run fails at once), on the same video in the same process: the speed ratio."""
    say(f"bench: the same video on the {args.compare_backend} backend")
    warm_up(other)
    x_realtime = speed([run_stream(video, other, args.faces, args.repeat, args.realtime)])["x_realtime"]
    return {"backend": backend_of(other), "x_realtime": x_realtime,
            "ratio": round(rep["x_realtime"] / x_realtime, 3) if x_realtime else None}


def streaming_modes(cached: Spotter, video: Path, args: argparse.Namespace, runs: list[StreamRun]) -> dict[str, Any]:
    """FGSL with and without the chunk cache on the same video in the same process.

    ``cached`` has already run (``runs``); the uncached spotter uses the same engine, the same
    windows (same stride) and the same frames, so the ratio is the cache's effect alone.
    """
    from .spotters.fgsl import FGSLSpotter

    plain = FGSLSpotter(cached.engine, threshold=cached.threshold, stride=cached.stride, cached=False,
                        trained=cached.trained)
    say("bench: the same video again without the chunk cache")
    warm_up(plain)
    plain_runs = [run_stream(video, plain, args.faces, args.repeat, args.realtime)]

    with_cache = {**speed(runs), "encoder_ms": percentiles(cached.work["encode_ms"], ("p50", "p95"), (50, 95), 2),
                  "decoder_ms": percentiles(cached.work["decode_ms"], ("p50", "p95"), (50, 95), 2),
                  "encoded_chunks": cached.encoded_chunks,
                  "cache_bytes_per_track": max(r.cache_bytes_per_track for r in runs)}
    without = {**speed(plain_runs), "window_ms": percentiles(plain.work["infer_ms"], ("p50", "p95"), (50, 95), 2),
               "engine_calls": len(plain.work["infer_ms"])}
    ratio = with_cache["x_realtime"] / without["x_realtime"] if without["x_realtime"] else None
    return {"cached": with_cache, "uncached": without, "cached_over_uncached": None if ratio is None else round(ratio, 3),
            "stride": cached.stride, "window": cached.window}


# ------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_: list[str] | None) -> int:
        video = Path(args.video) if args.video else SAMPLE_VIDEO
        if args.video is None and not SAMPLE_VIDEO.is_file():
            raise UsageError(f"the bundled sample {SAMPLE_VIDEO} is missing; pass --video PATH")
        if video.is_dir():
            raise UsageError(f"--video {video}: a folder; the benchmark reads a video file")
        open_source(video)  # a bad path fails here, in one line, before any model loads
        if not args.synthetic and (flag := recipe_flag(args)):
            raise UsageError(f"{flag} describes the injected movements of --synthetic; without it, it would be ignored")
        recipe = synthetic_recipe(args) if args.synthetic else None
        spotter = make_spotter(args)
        if spotter.name != "fgsl" and (args.compare_backend or args.cached_only):
            flag = "--compare-backend" if args.compare_backend else "--cached-only"
            raise UsageError(f"{flag} concerns the fgsl spotter (pass --weights, or --spotter fgsl --allow-untrained)")
        other = (make_spotter(argparse.Namespace(**{**vars(args), "backend": args.compare_backend}))
                 if args.compare_backend else None)
        with tempfile.TemporaryDirectory(prefix="realtime_bench_") as tmp:
            videos, annotations = [video], None
            if recipe is not None:
                say(f"bench: injecting micro-expressions into {video} ({recipe.count} videos, "
                    f"{recipe.amplitude:g} px)")
                videos, annotations = make_synthetic(video, Path(tmp), recipe)
            say(f"bench: {len(videos)} video(s), {args.faces} face(s), repeat {args.repeat}, "
                f"{spotter.name} spotter")
            warm_up(spotter)
            runs = [run_stream(v, spotter, args.faces, args.repeat, args.realtime) for v in videos]
            rep = report(runs, spotter, args, video)
            if annotations is not None:
                rep["spotting"] = score(runs, annotations, args.faces)
            if getattr(spotter, "cached", False) and not args.synthetic and not args.cached_only:
                rep["streaming"] = streaming_modes(spotter, video, args, runs)
            if other is not None:
                rep["compare"] = compare_backend(args, video, rep, other)
        print(table(rep), flush=True)
        if args.json:
            print(json.dumps(rep), flush=True)
        return 0

    # The first Ctrl-C (or SIGTERM, SIGHUP: `timeout`, a closed terminal) ends the run, closes the face
    # tracker and removes the --synthetic videos; more would stop that closing.
    with interrupt_once(("SIGINT", *TERMINATING), later=STILL_CLOSING):
        return run(body)


if __name__ == "__main__":
    quiet_exit(main())
