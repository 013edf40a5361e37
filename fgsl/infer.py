"""``python -m fgsl.infer``: offline FGSL inference on videos -> MEGC submission CSV.

Each video is read as the weights were trained (:func:`reads_aligned`): MediaPipe-aligned
crops of its face, as the live spotter frames faces, for weights trained on those
(``fgsl.train --align-faces``, :mod:`fgsl.data.aligned`), else the centre square of each
frame (:mod:`fgsl.data.video`); ``--align-faces`` / ``--no-align-faces`` choose. It is
resampled to the model's fps and cut into windows of ``T`` frames every ``T/4`` frames (the last window is
aligned to the end; a video shorter than a window is padded by repeating its last frame).
Windows go through the engine in batches, are decoded with :func:`fgsl.decode.decode`, moved
to video time, merged across windows into one interval per movement (:func:`merge`), and written as
``subject,video,onset,offset,emotion`` rows with 0-based frame indices of the source video.

``--preset P --allow-untrained`` runs randomly initialised weights: the intervals are
meaningless and every output line says so. It exists to exercise the pipeline and for
benchmarks before trained weights exist.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .startup import quiet_exit, say, startup_imports

# Importing torch and OpenCV takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np
    from tqdm import tqdm

    from engines import add_backend_flag
    from engines.base import add_engine_device_flag

    from .cli import (ArgumentParser, HelpFormatter, UsageError, add_source_fps_flag, check_output, positive_int,
                      refuse_given_twice, refuse_preset_with_weights, register_user_error, run, score_threshold,
                      subject_name)
    from .config import DEFAULT_PRESET, PRESETS, FGSLConfig, preset
    from .data.frames import open_source
    from .data.video import normalise, pad_frames, read_crops, resample_indices, to_source_frame
    from .decode import Interval, decode
    from .evaluate import MEGC_COLUMNS, read_intervals
    from .files import atomic_write


@dataclass(frozen=True)
class Detection:
    """An interval in source-video frames (0-based, inclusive) with its class name."""

    video: str
    onset: int
    apex: int
    offset: int
    emotion: str
    score: float


def window_starts(frames: int, window: int) -> list[int]:
    """Starts of windows of ``window`` frames every ``window // 4``, the last one end-aligned.

    A quarter-window stride puts every event of up to 3/4 of a window wholly inside at
    least one window; the merge step then keeps the best-scored interval.
    """
    if frames <= window:
        return [0]
    stride = max(1, window // 4)
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] != frames - window:
        starts.append(frames - window)
    return starts


#: Intervals closer than this (seconds between one's end and the other's start, or
#: overlapping) are one movement in the final output. Chosen on a validation set of
#: synthetic events (docs/benchmarks.md): the ramps of one movement otherwise come out as
#: extra fragments beside it.
MERGE_GAP_S = 0.25


def merge(intervals: list[Interval], threshold: float, gap: float = 0.0) -> list[Interval]:
    """One interval per movement: class-agnostic greedy suppression over all windows.

    Within a window, decoding keeps ActionFormer's class-aware soft-NMS (a ranked list).
    A spotter's final output is different: the MEGC metric counts every reported interval,
    so the same movement seen by overlapping windows, scored for two classes, or split
    into fragments must be reported once, with its best-scored class. An interval is
    dropped when it overlaps, or comes within ``gap`` frames of, a better one. Returns the
    survivors above ``threshold``, best first.
    """
    ranked = sorted((iv for iv in intervals if iv.score >= threshold), key=lambda iv: -iv.score)
    kept: list[Interval] = []
    for iv in ranked:
        if all(iv.offset < k.onset - gap or iv.onset > k.offset + gap for k in kept):
            kept.append(iv)
    return kept


def window_intervals(engine, frames: np.ndarray, batch: int = 4, threshold: float | None = None,
                     progress: bool = False, desc: str = "") -> list[Interval]:
    """Every window's decoded intervals above ``threshold``, in model frames of the whole
    video, before merging.

    The score threshold is applied after soft-NMS (:func:`fgsl.decode.decode`) and again
    by :func:`merge`, so ``merge(window_intervals(f, t0), t, gap)`` equals
    ``spot_frames(f, t)`` for every ``t >= t0``: a threshold sweep runs the network once.
    """
    cfg: FGSLConfig = engine.cfg
    threshold = cfg.score_threshold if threshold is None else threshold
    frames = pad_frames(frames, cfg.window_frames)  # a video shorter than one window
    starts = window_starts(len(frames), cfg.window_frames)
    found: list[Interval] = []
    bar = tqdm(total=len(starts), desc=desc, unit="win", disable=not progress, file=sys.stderr)
    for i in range(0, len(starts), batch):
        group = starts[i : i + batch]
        clips = np.stack([normalise(frames[s : s + cfg.window_frames]) for s in group])
        for start, intervals in zip(group, decode(engine.infer(clips), cfg, threshold=threshold)):
            found.extend(iv.shifted(start) for iv in intervals)
        bar.update(len(group))
    bar.close()
    return found


def merge_windows(intervals: list[Interval], cfg: FGSLConfig, threshold: float | None = None) -> list[Interval]:
    """:func:`merge` with the final output's rule: gap :data:`MERGE_GAP_S`, the config's threshold."""
    threshold = cfg.score_threshold if threshold is None else threshold
    return merge(intervals, threshold, gap=MERGE_GAP_S * cfg.fps)


def spot_frames(engine, frames: np.ndarray, batch: int = 4, threshold: float | None = None,
                progress: bool = False, desc: str = "") -> list[Interval]:
    """Intervals (model frames, merged across windows) in ``[F, S, S, 3]`` RGB uint8 frames at ``cfg.fps``."""
    found = window_intervals(engine, frames, batch, threshold, progress, desc)
    return merge_windows(found, engine.cfg, threshold)


def to_detections(intervals: list[Interval], cfg: FGSLConfig, video: str, source_fps: float,
                  source_frames: int) -> list[Detection]:
    """Model-frame intervals -> detections in the source video's own 0-based frames: the
    nearest source frame (:func:`fgsl.data.video.to_source_frame`, the rule training targets
    were made with), within the video."""

    def to_source(frame: float) -> int:
        return min(to_source_frame(frame, source_fps, cfg.fps), source_frames - 1)

    return [
        Detection(video, to_source(iv.onset), to_source(iv.apex), to_source(iv.offset), cfg.classes[iv.label], iv.score)
        for iv in intervals
    ]


def infer_video(
    engine, path: str | Path, batch: int = 4, progress: bool = True, threshold: float | None = None,
    fps: float | None = None, aligned: bool = False,
) -> list[Detection]:
    """Detections in one video file or frame folder (``fps``: required for a folder), read as
    aligned face crops or centre crops (``aligned``, :func:`fgsl.data.video.read_crops`)."""
    cfg: FGSLConfig = engine.cfg
    video = read_crops(path, cfg.image_size, fps, aligned=aligned, progress=progress, model_fps=cfg.fps)
    frames = video.frames[resample_indices(video.count, video.fps, cfg.fps)]
    intervals = spot_frames(engine, frames, batch, threshold, progress, desc=Path(path).name)
    return to_detections(intervals, cfg, str(path), video.fps, video.count)


def write_csv(rows: list[Detection], out: Path, names: dict[str, tuple[str, str]]) -> None:
    """The MEGC submission CSV, atomically; ``names`` maps each input path (``Detection.video``)
    to its (subject, video) columns (:func:`table_names`)."""
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(MEGC_COLUMNS)
    for d in rows:
        w.writerow([*names[d.video], d.onset, d.offset, d.emotion])
    atomic_write(out, text.getvalue().encode())


def video_name(path: str | Path) -> str:
    """A video's own name: a file's stem, a frame folder's name; for CAS(ME)^3's
    ``<subject>/<video>/color`` frame folders, the folder above ``color``."""
    path = Path(path)
    return path.parent.name if path.name == "color" else path.stem


def truth_keys(path: str | None) -> list[tuple[str, str]]:
    """The (subject, video) pairs of a ground-truth CSV (our table or the MEGC layout)."""
    if not path:
        return []
    return sorted({(row.subject, row.video) for row in read_intervals(path)})


def table_names(paths: list[str], truth: list[tuple[str, str]], subject: str | None = None) -> dict[str, tuple[str, str]]:
    """Each input path's (subject, video) columns. With ground truth: its row for the video's
    name, or for a name that continues it with a letter (CAS(ME)^2's ``15_0401girlcrashing``
    is table video ``15_0401``); where several subjects have that video (CAS(ME)^3's ``a``),
    the one named in the path. Else ``subject`` or the video's own name (as ``realtime.cam``;
    with ground truth, :func:`say_unmatched` says so)."""
    out = {}
    for path in paths:
        name = video_name(path)
        rows = [(s, v) for s, v in truth if v == name] or [
            (s, v) for s, v in truth if name.startswith(v) and len(name) > len(v) and name[len(v)].isalpha()]
        if len(rows) > 1:
            rows = [(s, v) for s, v in rows if s in Path(path).resolve().parts] or rows
        if len(rows) > 1:
            raise UsageError(f"{path}: the ground truth has video {rows[0][1]!r} under {len(rows)} subjects "
                             f"({', '.join(s for s, _ in rows[:4])}) and none is in the path; keep each subject's "
                             "videos in a folder named after it")
        out[path] = rows[0] if rows else (subject or name, name)
    return out


def say_unmatched(names: dict[str, tuple[str, str]], truth: list[tuple[str, str]]) -> None:
    """A warning for each input whose rows (:func:`table_names`) no ground-truth row names:
    ``fgsl.evaluate`` would ignore them (megc) or count every one as a false positive
    (strict). ``fgsl.tune`` says it its own way (such a video counts as one without movements)."""
    for path, (subject, video) in names.items():
        if truth and (subject, video) not in truth:
            warnings.warn(f"{path}: no video {video!r} in the ground truth; its rows are named subject {subject!r}, "
                          f"video {video!r}, which fgsl.evaluate cannot match with it")


def refuse_rows_alike(paths: list[str], names: dict[str, tuple[str, str]], scoring: bool = False) -> None:
    """Refuse two inputs whose rows would be alike (the same ``subject,video``): their
    intervals could not be told apart. One file given twice (also under two names) would list
    each interval twice. ``scoring`` (``fgsl.tune``): both would be scored against the same
    ground-truth rows, each other's intervals counting as false positives."""
    twice = "scored twice against the same --gt rows" if scoring else "listed twice in the CSV"
    refuse_given_twice("video", paths, f"its intervals would be {twice}; give it once")
    first: dict[tuple[str, str], str] = {}
    for path in paths:
        key = names[path]
        if key in first:
            other = first[key]
            raise UsageError(f"--videos {other} and {path} would both be subject {key[0]!r}, video {key[1]!r} "
                             f"{'in --gt' if scoring else 'in the CSV'}, so their intervals could not be told apart: "
                             f"rename one{'' if scoring else ', or name subjects with --subjects-from'}")
        first[key] = path


def open_engine(weights: str | Path | None, *, allow_untrained: bool = False, preset_name: str | None = None,
                backend: str = "auto", device: str | None = "auto") -> tuple[Any, bool | None]:
    """(engine, trained?) from ``--weights`` (a weights or an engine folder) or, with
    ``--allow-untrained``, a random ``--preset`` network: how ``fgsl.infer``, the live FGSL
    spotter and the demo open FGSL. ``trained`` is ``None`` for an engine folder whose manifest
    does not know (:func:`engines.trained`).

    ``device`` (``--engine-device``, default ``auto``) picks where it runs: the GPU where torch
    sees one, so a GPU machine uses it (and ``backend="auto"`` tries TensorRT).
    """
    import engines

    from .model import build

    device = device or "auto"
    refuse_preset_with_weights(weights, preset_name)
    if weights:
        engine = engines.open(weights, backend=backend, device=device, allow_untrained=allow_untrained)
        return engine, engines.trained(weights)
    if not allow_untrained:
        raise UsageError("give --weights RUN_DIR (trained FGSL), or --preset P --allow-untrained to run random weights")
    name = preset_name or DEFAULT_PRESET
    engine = engines.open_model(build(preset(name)), backend=backend, device=device,
                                source=f"untrained preset {name!r}")
    return engine, False


def weights_folder(engine: Any) -> Path | None:
    """The engine's weights folder, when it was opened from one."""
    from . import weights

    source = getattr(engine, "source", None)
    if source and (Path(source) / weights.WEIGHTS_FILE).is_file():
        return Path(source)
    return None


def trained_crops(engine: Any) -> str | None:
    """What the engine's weights were trained on, as recorded with them: ``"centre"``
    (:data:`fgsl.data.video.CROPS`, centre crops of face videos) or ``"aligned"``
    (:data:`fgsl.data.aligned.ALIGNED`, the live spotter's framing); ``None`` when unknown
    (random weights, weights from elsewhere)."""
    from engines.export import is_engine_dir, read_manifest

    from . import weights

    source = getattr(engine, "source", None)
    if source and is_engine_dir(source):  # engines.build copied it from the weights
        manifest = read_manifest(source, verify=False)
        if "crops" in manifest:
            return manifest["crops"]
        weights_dir = Path(str(manifest.get("source") or ""))  # built before manifests had it
        return weights.info(weights_dir).get("crops") if (weights_dir / weights.WEIGHTS_FILE).is_file() else None
    folder = weights_folder(engine)
    return None if folder is None else weights.info(folder).get("crops")


def reads_aligned(trained: str | None, given: bool | None) -> bool:
    """Whether ``fgsl.infer`` and ``fgsl.tune`` align faces: as ``--align-faces`` /
    ``--no-align-faces`` say (``given``), else when the weights were trained on aligned crops
    (``trained``, :func:`trained_crops`). Weights trained on centre crops, or of unknown
    origin, get the centre crops they have always got."""
    from .data.aligned import ALIGNED

    return trained == ALIGNED if given is None else given


def add_align_faces_flag(parser: ArgumentParser) -> None:
    """``--align-faces`` / ``--no-align-faces`` for ``fgsl.infer`` and ``fgsl.tune`` (default:
    :func:`reads_aligned`)."""
    parser.add_argument("--align-faces", action=argparse.BooleanOptionalAction, default=None,
                        help="read MediaPipe-aligned crops of each video's face (as the live spotter frames faces) "
                             "instead of the centre square of each frame (default: as the weights were trained; "
                             "docs/training.md)")


def crops_line(aligned: bool, trained: str | None, videos: Sequence[str | Path] = ()) -> str:
    """How the videos are read, for the start-up line: for aligned crops, where they are kept
    (the crop cache writes to the user's disk: it says so) and which ``videos`` are clips of an
    aligned synthetic set, read as they are (neither aligned again nor cached); and when that
    is not how the weights were trained (``trained``: a ``--no-align-faces`` or
    ``--align-faces`` against them)."""
    from .data import crop_cache
    from .data.aligned import ALIGNED
    from .data.synthetic import made_aligned
    from .data.video import CROPS

    used = ALIGNED if aligned else CROPS
    text = "centre crops"
    if aligned:
        as_made = sum(made_aligned(v) for v in videos)
        kept = f"cached in {crop_cache.default_dir()}" if crop_cache.enabled() else "not cached"
        text = f"faces aligned with MediaPipe, {kept}"
        if as_made == len(videos) > 0:
            text = "faces aligned already (clips of an aligned synthetic set, read as they are)"
        elif as_made:
            text += f"; {as_made} clip(s) of an aligned synthetic set read as they are"
    if trained is not None and trained != used:
        text += f" (the weights were trained on {trained} crops: expect lower accuracy)"
    return text


#: What each output line says about the weights (``engines.trained``: True, False or unknown).
WEIGHTS_TAG = {True: "", False: " [UNTRAINED WEIGHTS: intervals are meaningless]",
               None: " [weights of unknown origin: the engine folder does not say whether they were trained]"}


def main(argv: list[str] | None = None) -> int:
    from realtime.types import RealtimeError  # (light: no MediaPipe)

    register_user_error(RealtimeError)  # aligned reading: MediaPipe cannot start (not installed, no libEGL)
    parser = ArgumentParser(prog="python -m fgsl.infer", description=__doc__.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("--weights", help="weights folder (model.safetensors + config.json) or engine folder "
                                          "(python -m engines.build)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="with --allow-untrained and no --weights (default: realtime)")
    parser.add_argument("--allow-untrained", action="store_true", help="accept random weights (outputs are meaningless)")
    add_backend_flag(parser)
    add_engine_device_flag(parser)
    parser.add_argument("--videos", nargs="+", required=True, help="video files or folders of numbered frames")
    add_source_fps_flag(parser)
    parser.add_argument("--out", default="pred.csv", help="MEGC CSV to write (default: pred.csv)")
    parser.add_argument("--subject", type=subject_name, help="subject column value (default: each video's name, as realtime.cam --csv)")
    parser.add_argument("--subjects-from", metavar="GT.csv",
                        help="take each video's subject from this ground-truth CSV, as MEGC scoring needs "
                             "(videos it lacks get --subject)")
    parser.add_argument("--batch", type=positive_int, default=4, help="windows per engine call (default: 4)")
    parser.add_argument("--threshold", type=score_threshold,
                        help="minimum score, in [0, 1) (default: the config's score_threshold)")
    add_align_faces_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        from engines.export import folder_files

        out = Path(args.out)
        check_output("--out", out, [("--videos", v) for v in args.videos] + [("--subjects-from", args.subjects_from)]
                     + [("--weights", f) for f in folder_files(args.weights)])
        # Before the long part: a bad name or video found last would cost every video's work.
        truth = truth_keys(args.subjects_from)
        names = table_names(args.videos, truth, args.subject)
        refuse_rows_alike(args.videos, names)
        say_unmatched(names, truth)
        for path in args.videos:
            open_source(path, args.fps)
        engine, trained = open_engine(args.weights, allow_untrained=args.allow_untrained, preset_name=args.preset,
                                      backend=args.backend, device=args.engine_device)
        tag = WEIGHTS_TAG.get(trained, WEIGHTS_TAG[None])
        trained_on = trained_crops(engine)
        aligned = reads_aligned(trained_on, args.align_faces)
        d = engine.describe()
        say(f"FGSL {d['preset']} on {d['backend']} ({d['device']}), {crops_line(aligned, trained_on, args.videos)}{tag}")
        rows: list[Detection] = []
        console: OSError | None = None  # stdout failed (a log on a full disk): the CSV is written all the same
        for path in args.videos:
            found = infer_video(engine, path, batch=args.batch, progress=not args.quiet, threshold=args.threshold,
                                fps=args.fps, aligned=aligned)
            rows.extend(found)
            try:
                for det in found if console is None else ():
                    print(f"{Path(det.video).name}: frames {det.onset}-{det.offset} apex {det.apex} "
                          f"{det.emotion} score {det.score:.2f}{tag}", flush=True)
            except OSError as exc:
                console = exc
        write_csv(rows, out, names)
        say(f"wrote {len(rows)} intervals from {len(args.videos)} video(s) to {out}{tag}")
        if console is not None:
            raise console  # (after the CSV: fgsl.cli.run reports it in one line)
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
