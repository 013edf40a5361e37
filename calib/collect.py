"""``python -m calib.collect``: representative aligned-face windows for INT8/FP8 calibration.

Calibration data must look like what the engine will see live, so it is gathered **through
the live pipeline**, not by a separate reader: each video goes through
:class:`realtime.capture.Capture` (the capture thread) -> :class:`realtime.pipeline.Pipeline`
(:class:`realtime.face.FaceTracker`: MediaPipe, track ids, stabilised alignment at the crop
size the live FGSL spotter asks for, ``max(image_size, 128)`` px; :class:`realtime.buffer.Buffers`: per-track windows resampled to the
model's fps, every ``stride`` model frames, the last window of each track padded as live).
The pipeline's spotter is a recorder that keeps a uniform random sample of all the windows it
is handed (reservoir sampling, seeded: the same videos and seed give the same file), so the
sample spreads over all videos, faces and moments in proportion to how often they occur.

What is saved (``.npz``, written atomically)
--------------------------------------------
* ``crops`` ``[N, T, S, S, 3]`` uint8 RGB: each window's aligned crops, at the model's image
  size S (the tracker's crops shrunk with ``INTER_AREA`` by
  :func:`realtime.spotters.fgsl.model_crops`, as the live FGSL spotter does); a quarter of
  the size of the float32 model input.
* ``video`` ``[N]`` (index into ``videos``), ``track`` ``[N]``, ``indices`` ``[N, T]`` (source
  frame of each model frame), ``videos`` (file names), ``config`` (the FGSL config JSON),
  ``format``/``version``.

:func:`load` returns a :class:`CalibrationSet` whose ``clips`` are the engine input
``[N, 3, T, S, S]`` float32, normalised by :func:`fgsl.data.video.normalise`, the function
:meth:`realtime.spotters.fgsl.FGSLSpotter.clips` applies (ImageNet mean/std, channels first):
tests check that ``load(...).clips`` equals ``FGSLSpotter.clips`` of the recorded windows.

Errors are one line (``error: ...``, exit status 2): a missing or undecodable video, no face
in any video, a bad preset or weights folder.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import numpy as np

    from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, add_source_fps_flag, at_least, check_output,
                          check_output_suffix, explain, positive_int, run)
    from fgsl.config import DEFAULT_PRESET, FGSLConfig
    from fgsl.config import preset as preset_config
    from fgsl.data.video import normalise

    from . import CalibError

FORMAT = "fgsl-calib"
VERSION = 1
DEFAULT_COUNT = 64


# ---------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------

@dataclass
class CalibrationSet:
    """Calibration windows as collected; :attr:`clips` is the engine input."""

    crops: np.ndarray          # [N, T, S, S, 3] uint8 RGB
    video: np.ndarray          # [N] int
    track: np.ndarray          # [N] int
    indices: np.ndarray        # [N, T] int64
    videos: list[str]
    cfg: FGSLConfig
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.crops)

    def clips(self, count: int | None = None) -> np.ndarray:
        """``[N, 3, T, S, S]`` float32 model input, normalised as the FGSL spotter does."""
        crops = self.crops if count is None else self.crops[:count]
        return np.stack([normalise(c) for c in crops])

    def chunks(self, count: int | None = None) -> np.ndarray:
        """``[N * T/16, 3, 16, S, S]``: the clips cut into the 16-frame chunks ``encode_chunk`` takes,
        in the engines' order (:func:`engines.base.split_chunks`)."""
        from engines.base import split_chunks

        return split_chunks(self.clips(count))[0]


def save(data: CalibrationSet, path: str | Path) -> Path:
    """Write ``data`` to ``path`` (``.npz``, compressed) atomically."""
    from fgsl.files import atomic_write

    buf = io.BytesIO()
    np.savez_compressed(
        buf, format=np.array(FORMAT), version=np.array(VERSION), crops=data.crops,
        video=data.video.astype(np.int32), track=data.track.astype(np.int32), indices=data.indices.astype(np.int64),
        videos=np.array(data.videos), config=np.array(data.cfg.to_json()), stats=np.array(json.dumps(data.stats)),
    )
    return atomic_write(path, buf.getvalue())


def _read_archive(path: Path, z: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and stats of an open ``.npz`` archive, or :class:`CalibError` for one that is
    not :func:`save`'s (another format, or a version that is not a whole number: ``int([1, 2])``
    was a TypeError traceback)."""
    if "format" not in z.files or str(z["format"]) != FORMAT:
        raise CalibError(f"{path}: not a calibration file from python -m calib.collect")
    version = z["version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != VERSION:
        raise CalibError(f"{path}: calibration file version {version.tolist()!r}, this code reads {VERSION}")
    arrays = {k: z[k] for k in ("crops", "video", "track", "indices", "videos", "config")}
    stats = json.loads(str(z["stats"])) if "stats" in z.files else {}
    return arrays, stats if isinstance(stats, dict) else {}


def check_sources(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Refuse video names that are not a list of text, and window indices that are not whole
    numbers or name no video: every reader indexes ``videos`` by ``video``."""
    videos, video = arrays["videos"], arrays["video"]
    if videos.ndim != 1 or videos.dtype.kind != "U":
        raise CalibError(f"{path}: its videos must be a list of file names, got {videos.dtype} {list(videos.shape)} "
                         "(damaged file)")
    if any(arrays[k].dtype.kind not in "iu" for k in ("video", "track", "indices")):
        raise CalibError(f"{path}: its video, track and frame indices must be whole numbers (damaged file)")
    if len(video) and not (0 <= video.min() and video.max() < len(videos)):
        raise CalibError(f"{path}: its windows name videos {int(video.min())}..{int(video.max())}, but it lists "
                         f"{len(videos)} (damaged file)")


def load(path: str | Path) -> CalibrationSet:
    """Read a file written by :func:`save`; :class:`CalibError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CalibError(f"{path}: no such calibration file (make one with python -m calib.collect)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # one .npy array saved under an .npz name
            raise CalibError(f"{path}: not a calibration file from python -m calib.collect")
        with archive as z:
            arrays, stats = _read_archive(path, z)
    except CalibError:
        raise
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibError(f"{path}: damaged calibration file ({explain(exc)})") from None
    try:
        cfg = FGSLConfig.from_dict(json.loads(str(arrays["config"])), source=f"{path} (config)")
    except (ValueError, TypeError) as exc:
        raise CalibError(f"{path}: its FGSL config is unreadable ({exc})") from None
    crops = arrays["crops"]
    want = (cfg.window_frames, cfg.image_size, cfg.image_size, 3)
    if crops.ndim != 5 or crops.shape[1:] != want or crops.dtype != np.uint8 or not len(crops):
        raise CalibError(f"{path}: crops must be [N, {', '.join(map(str, want))}] uint8 with N >= 1, "
                         f"got {crops.dtype} {list(crops.shape)}")
    n = len(crops)
    if arrays["video"].shape != (n,) or arrays["track"].shape != (n,) or arrays["indices"].shape != (n, want[0]):
        raise CalibError(f"{path}: its arrays disagree in length (damaged file)")
    check_sources(path, arrays)
    return CalibrationSet(crops, arrays["video"], arrays["track"], arrays["indices"],
                          [str(v) for v in arrays["videos"]], cfg, stats)


# ---------------------------------------------------------------------------------------
# Collection through the live pipeline
# ---------------------------------------------------------------------------------------

class _Recorder:
    """The live pipeline's spotter during collection: keeps a seeded uniform sample of windows.

    It follows :class:`realtime.spotters.base.Spotter` but spots nothing: no candidates (so no
    merging gap), no weights, no signal.
    """

    name = "calibration"
    merge_gap_s = 0.0
    trained = None

    def __init__(self, cfg: FGSLConfig, count: int, stride: int, seed: int) -> None:
        from fgsl.data.aligned import tracker_crop_size

        self.window = cfg.window_frames
        self.stride = stride
        self.fps = float(cfg.fps)
        self.crop_size = tracker_crop_size(cfg.image_size)  # the tracker's crops for the live FGSL spotter
        self.count = count
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.video = 0
        self.samples: list[tuple[int, Any]] = []

    def process(self, windows: list[Any]) -> list[list[Any]]:
        for window in windows:
            if window.repeats_last:  # the same frames as the track's window before: not a new sample
                continue
            self.seen += 1
            item = (self.video, window)
            if len(self.samples) < self.count:  # reservoir sampling (Algorithm R)
                self.samples.append(item)
            else:
                j = int(self.rng.integers(0, self.seen))
                if j < self.count:
                    self.samples[j] = item
        return [[] for _ in windows]

    def final_before(self, window: Any) -> int:
        from realtime.spotters.base import next_window_start

        return next_window_start(window, self.stride)

    def end_track(self, track: int) -> None:
        pass

    def describe(self) -> str:
        return f"calibration windows of {self.window} frames (no model runs)"

    def signals(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {}

    def signal_threshold(self) -> float | None:
        return None


def _frame_estimate(path: Path, fps: float | None = None) -> int | None:
    import cv2

    from fgsl.data.frames import open_source

    try:
        source = open_source(path, fps)
    except Exception:  # noqa: BLE001 (Capture reports the real error next)
        return None
    if source.count is not None:
        return source.count
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return n or None


def collect_windows(videos: list[str | Path], cfg: FGSLConfig, count: int = DEFAULT_COUNT, *,
                    stride: int | None = None, max_faces: int = 4, seed: int = 0, max_frames: int | None = None,
                    face_model: str | Path | None = None, progress: bool = True,
                    fps: float | None = None) -> tuple[list[tuple[int, Any]], dict]:
    """Run every video through capture -> face tracker -> buffers; return a sample of windows.

    Returns ``([(video_index, Window), ...], stats)``, sorted by video, track and start frame.
    ``stride`` (model frames between a track's windows) defaults to a quarter window, as the
    uncached FGSL spotter. ``max_frames`` caps the frames read per video. ``fps`` is the
    frame rate of every source: required for a folder of numbered frames (it has none),
    overriding a video file's header (as ``realtime.cam --fps``).
    """
    from tqdm import tqdm

    from realtime.capture import Capture, parse_source
    from realtime.face import FaceTracker
    from realtime.pipeline import Pipeline
    from realtime.types import RealtimeError

    if not videos:
        raise UsageError("give at least one video (--videos ...)")
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    stride = max(1, cfg.window_frames // 4) if stride is None else int(stride)
    if not 1 <= stride <= cfg.window_frames:
        raise UsageError(f"--stride must be 1..{cfg.window_frames} model frames, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {max_frames}")
    paths = [Path(v) for v in videos]
    sources = []
    for path in paths:  # open every source first: a bad path fails before the long part
        try:
            sources.append(parse_source(None, path, fps))
            Capture(sources[-1]).stop()
        except RealtimeError as exc:
            raise CalibError(str(exc)) from None
    recorder = _Recorder(cfg, count, stride, seed)
    per_video = []
    for i, (path, source) in enumerate(zip(paths, sources)):
        recorder.video = i
        before = recorder.seen
        frames = face_frames = 0
        total = _frame_estimate(path, fps)
        if max_frames is not None and total is not None:
            total = min(total, max_frames)
        bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress, leave=False, file=sys.stderr)
        try:
            with FaceTracker(max_faces=max_faces, crop_size=recorder.crop_size, model_path=face_model) as tracker, \
                    Capture(source) as capture:
                pipeline = Pipeline(tracker, recorder)
                for frame in capture:
                    result = pipeline.step(frame)
                    frames += 1
                    face_frames += bool(result.faces)
                    bar.update(1)
                    bar.set_postfix(windows=recorder.seen, refresh=False)
                    if max_frames is not None and frames >= max_frames:
                        break
                pipeline.finish()
        except RealtimeError as exc:
            raise CalibError(str(exc)) from None
        finally:
            bar.close()
        per_video.append({"video": path.name, "frames": frames, "face_frames": face_frames,
                          "windows": recorder.seen - before})
    stats = {"videos": per_video, "frames": sum(v["frames"] for v in per_video),
             "face_frames": sum(v["face_frames"] for v in per_video), "candidate_windows": recorder.seen,
             "stride": stride, "seed": seed}
    if not recorder.seen:
        raise CalibError(f"no face found in any of the {len(paths)} video(s) ({stats['frames']} frames read): "
                         "calibration needs windows of tracked faces")
    samples = sorted(recorder.samples, key=lambda s: (s[0], s[1].track, int(s[1].indices[0])))
    return samples, stats


def collect(videos: list[str | Path], cfg: FGSLConfig, count: int = DEFAULT_COUNT, **kwargs: Any) -> CalibrationSet:
    """:func:`collect_windows` as a :class:`CalibrationSet` (what :func:`save` writes)."""
    from realtime.spotters.fgsl import model_crops

    samples, stats = collect_windows(videos, cfg, count, **kwargs)
    size = cfg.image_size
    crops = []
    for _, window in samples:
        c = np.asarray(window.crops)
        if c.shape[1:3] != (size, size):  # shrunk from the tracker's crops exactly as the live spotter does
            c = model_crops(window, cfg)
        crops.append(c)
    return CalibrationSet(
        crops=np.stack(crops).astype(np.uint8),
        video=np.array([v for v, _ in samples]),
        track=np.array([w.track for _, w in samples]),
        indices=np.stack([np.asarray(w.indices, np.int64) for _, w in samples]),
        videos=[Path(v).name for v in videos],
        cfg=cfg,
        stats=stats,
    )


def config_from_args(preset: str | None, weights: str | None) -> FGSLConfig:
    """The FGSL config of ``--weights DIR`` (a weights folder's config.json, or an engine
    folder's manifest.json: the windows are the same for both) or of ``--preset``."""
    if weights:
        from engines.export import config_of, is_engine_dir, read_manifest

        folder = Path(weights)
        if is_engine_dir(folder):
            return config_of(read_manifest(folder, verify=False))
        if not (folder / "config.json").is_file():
            raise CalibError(f"{folder}: neither a weights folder (config.json) nor an engine folder (manifest.json)")
        return FGSLConfig.load(folder / "config.json")
    return preset_config(preset or DEFAULT_PRESET)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m calib.collect", description=__doc__.split("\n\n")[0].split(": ", 1)[-1],
                       formatter_class=HelpFormatter)
    p.add_argument("--videos", nargs="+", required=True,
                   help="video files or folders of numbered frames (a folder needs --fps)")
    add_source_fps_flag(p)
    p.add_argument("--out", required=True, help="calibration file to write (.npz)")
    p.add_argument("--count", type=positive_int, default=DEFAULT_COUNT, help="windows to keep (a uniform sample of all windows)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", help="FGSL preset whose window and image size to use (default: realtime)")
    which.add_argument("--weights", help="FGSL weights folder or engine folder: use its config")
    p.add_argument("--stride", type=positive_int, help="model frames between a track's windows (default: a quarter window)")
    p.add_argument("--max-faces", type=positive_int, default=4, help="faces tracked at once")
    p.add_argument("--max-frames", type=positive_int, help="read at most this many frames of each video")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the sample")
    p.add_argument("--face-model", help="MediaPipe face landmarker bundle (default: the bundled one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_: list[str] | None) -> int:
        from realtime.types import RealtimeError

        from fgsl.cli import register_user_error

        register_user_error(RealtimeError)
        from engines.export import folder_files

        from fgsl.files import is_special_file

        # --weights' own files too: --out RUN/model.safetensors would destroy the model it names
        # (checked first: that line says more than the suffix's would).
        check_output("--out", args.out, [("--videos", v) for v in args.videos] + [("--face-model", args.face_model)]
                     + [("--weights", path) for path in folder_files(args.weights)])
        if not is_special_file(args.out):  # a device or pipe (--out /dev/stdout) has no name to check
            check_output_suffix("--out", args.out, ".npz", "the calibration file is an .npz archive")
        cfg = config_from_args(args.preset, args.weights)
        data = collect(args.videos, cfg, args.count, stride=args.stride, max_faces=args.max_faces, seed=args.seed,
                       max_frames=args.max_frames, face_model=args.face_model, progress=not args.quiet,
                       fps=args.fps)
        if len(data) < args.count:
            print(f"warning: only {len(data)} windows found (asked for {args.count}); saving them all",
                  file=sys.stderr)
        out = save(data, args.out)
        s = data.stats
        print(f"{out}: {len(data)} windows of {cfg.window_frames} frames at {cfg.image_size} px (preset {cfg.name!r}) "
              f"from {len(args.videos)} video(s): {s['frames']} frames read, {s['face_frames']} with a face, "
              f"{s['candidate_windows']} candidate windows; {out.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
