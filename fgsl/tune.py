"""``python -m fgsl.tune``: choose the score threshold on a validation set, keep it with the weights.

Which score makes an interval an answer is a choice apart from the weights. ``fgsl.train``
makes it on its own validation split (this module's :func:`sweep` and :func:`best`) and
stores it in the run's ``config.json``; this command makes it again for weights from
elsewhere or for other validation data (another camera, another population). It runs
offline inference (``fgsl.infer``'s own functions) on *validation* videos with known ground
truth, scores each candidate threshold with the MEGC metric (``fgsl.evaluate``, strict
mode), picks the best spotting F1 (then STRS; the higher threshold on a tie: fewer false
alarms) and, with ``--write``, stores it as ``score_threshold`` where the folder keeps its
config: a weights folder's ``config.json``, an engine folder's ``manifest.json`` (the graphs
do not depend on it); ``fgsl.infer``, the live FGSL spotter and the engines then use it.

The validation set must not be the test set: for synthetic data, make it from the
validation part of the sources, the frames between the training and the test part
(``python -m fgsl.data.synthetic ... --part val --seed 11``); the held-out test videos stay
untouched until the final evaluation.

``python -m fgsl.tune --weights RUN_DIR --videos VAL/videos/* --gt VAL/annotations.csv
[--thresholds 0.3,0.35,...] [--write]``
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

from .startup import quiet_exit, say, startup_imports

# Importing torch and ONNX Runtime takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from tqdm import tqdm

    from engines import add_backend_flag
    from engines.base import add_engine_device_flag
    from engines.export import MANIFEST, config_of, is_engine_dir, read_manifest, write_manifest

    from .cli import (ArgumentParser, HelpFormatter, UsageError, add_source_fps_flag, positive_int, register_user_error,
                      run)
    from .config import FGSLConfig, is_score_threshold
    from .data.spec import VideoItem, load_item
    from .evaluate import MegcInterval, evaluate, read_intervals, repeated_rows
    from .files import atomic_write, unwritable_reason
    from .infer import (add_align_faces_flag, crops_line, merge_windows, reads_aligned, refuse_rows_alike, table_names,
                        to_detections, trained_crops, truth_keys, video_name, window_intervals)
    from .weights import CONFIG_FILE, UntrainedWeights

DEFAULT_THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def sweep(engine, items: list[VideoItem], gt: list[Any], thresholds: tuple[float, ...],
          batch: int = 4, progress: bool = False) -> list[dict[str, float]]:
    """Strict MEGC scores of ``items`` (frames at the model's fps) at each threshold.

    The network runs once per video (:func:`fgsl.infer.window_intervals` at the lowest
    threshold); each threshold then only merges and scores, giving exactly what
    ``fgsl.infer --threshold T`` + ``fgsl.evaluate`` would.
    """
    cfg: FGSLConfig = engine.cfg
    found = [window_intervals(engine, item.frames, batch, min(thresholds))
             for item in tqdm(items, desc="validation videos", unit="video", disable=not progress, file=sys.stderr)]
    rows = []
    for threshold in thresholds:
        preds = [
            MegcInterval(item.subject, item.name, d.onset, d.offset, d.emotion)  # (compared by MegcInterval.key)
            for item, raw in zip(items, found)
            for d in to_detections(merge_windows(raw, cfg, threshold), cfg, item.name, item.source_fps,
                                   item.source_frames)
        ]
        result = evaluate(gt, preds, mode="strict")
        spotting = result["spotting"]
        rows.append({"threshold": threshold, **{k: spotting[k] for k in ("tp", "fp", "fn")},
                     "f1": nan_as_zero(spotting["f1"]), "recognition_f1": nan_as_zero(result["recognition"]["f1"]),
                     "strs": nan_as_zero(result["strs"])})
    return rows


def nan_as_zero(value: float) -> float:
    """A score with NaN ("undefined": no true positive to recognise, nothing predicted) as 0:
    for choosing a threshold, a threshold that finds nothing is worth nothing, and NaN would
    make :func:`best`'s comparisons meaningless (every comparison with NaN is false)."""
    return 0.0 if math.isnan(value) else float(value)


def best(rows: list[dict[str, float]]) -> dict[str, float]:
    """The row with the highest spotting F1, then STRS; on a tie the higher threshold
    (fewer false alarms). Spotting first: it is the live spotter's job, and STRS follows it."""
    return max(rows, key=lambda r: (round(r["f1"], 12), round(r["strs"], 12), r["threshold"]))


def threshold_file(folder: Path) -> Path:
    """The file ``--write`` rewrites, checked before the sweep (not after minutes of it): an
    engine folder keeps its config in ``manifest.json``, a weights folder in ``config.json``.
    Both are replaced atomically, so the folder must be writable."""
    target = folder / (MANIFEST if is_engine_dir(folder) else CONFIG_FILE)
    reason = unwritable_reason(target)
    if reason is not None:
        raise UsageError(f"--write: cannot write {target} ({reason})")
    return target


def write_threshold(folder: Path, threshold: float) -> Path:
    """Store ``score_threshold`` in the folder's config (tensors and graphs are untouched); returns the file."""
    target = threshold_file(folder)
    if target.name == MANIFEST:
        manifest = read_manifest(folder, verify=False)
        manifest["config"] = config_of(manifest).replace(score_threshold=threshold).to_dict()
        return write_manifest(folder, manifest)
    cfg = FGSLConfig.load(target)
    return atomic_write(target, (cfg.replace(score_threshold=threshold).to_json() + "\n").encode())


def format_sweep(rows: list[dict[str, float]]) -> str:
    lines = ["threshold    tp    fp    fn  spot F1    STRS"]
    lines += [f"{r['threshold']:9.3f} {r['tp']:5d} {r['fp']:5d} {r['fn']:5d}   {r['f1']:.4f}  {r['strs']:.4f}" for r in rows]
    return "\n".join(lines)


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--thresholds must be comma-separated numbers, got {text!r}") from None
    if not values or not all(map(is_score_threshold, values)):
        raise UsageError(f"--thresholds must lie in [0, 1), got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    from realtime.types import RealtimeError  # (light: no MediaPipe)

    register_user_error(RealtimeError)  # aligned reading: MediaPipe cannot start (not installed, no libEGL)
    parser = ArgumentParser(prog="python -m fgsl.tune", description=__doc__.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("--weights", required=True, help="trained weights folder, or engine folder (engines.build)")
    parser.add_argument("--videos", nargs="+", required=True,
                        help="validation videos or frame folders (not the test set), named as in --gt")
    add_source_fps_flag(parser)
    parser.add_argument("--gt", required=True, help="their ground truth (annotation table or MEGC CSV)")
    parser.add_argument("--thresholds", default=",".join(str(t) for t in DEFAULT_THRESHOLDS),
                        help="candidate score thresholds, comma-separated, each in [0, 1)")
    add_backend_flag(parser)
    add_engine_device_flag(parser)
    parser.add_argument("--batch", type=positive_int, default=4, help="windows per engine call (at least 1)")
    parser.add_argument("--write", action="store_true",
                        help="store the best threshold in the folder's config.json (manifest.json of an engine folder)")
    add_align_faces_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        import engines

        thresholds = _thresholds(args.thresholds)
        gt = read_intervals(args.gt)
        repeated = repeated_rows(gt)
        if repeated:  # (said once here: the sweep's evaluations keep theirs)
            warnings.warn(f"--gt {args.gt}: {repeated}")
        keys = truth_keys(args.gt)
        names = table_names(args.videos, keys)
        refuse_rows_alike(args.videos, names, scoring=True)
        lacking = [v for v in args.videos if names[v] not in keys]
        if len(lacking) == len(args.videos):
            # Every video would count as event-free and every threshold score 0.
            raise UsageError(f"none of the {len(lacking)} --videos is in --gt {args.gt} (videos are matched by name, "
                             f"e.g. {video_name(lacking[0])!r}): pass the videos this ground truth describes")
        if lacking:
            warnings.warn(f"{len(lacking)} of the --videos are not in --gt and count as videos without movements "
                          f"({', '.join(video_name(v) for v in lacking[:3])}{', ...' if len(lacking) > 3 else ''})")
        try:
            engine = engines.open(args.weights, backend=args.backend, device=args.engine_device)
        except UntrainedWeights:
            raise UsageError(f"{args.weights}: untrained (random) weights; a threshold for them means nothing, "
                             "so fgsl.tune takes trained weights only") from None
        if args.write:
            threshold_file(Path(args.weights))
        trained_on = trained_crops(engine)
        aligned = reads_aligned(trained_on, args.align_faces)
        say(f"videos read as {crops_line(aligned, trained_on, args.videos)}")
        items = [load_item(engine.cfg, *names[v], Path(v), [], fps=args.fps, aligned=aligned, progress=not args.quiet)
                 for v in args.videos]
        rows = sweep(engine, items, gt, thresholds, args.batch, progress=not args.quiet)
        print(format_sweep(rows))
        choice = best(rows)
        print(f"best: {choice['threshold']:g} (spotting F1 {choice['f1']:.4f}, STRS {choice['strs']:.4f})")
        if not any(row["tp"] for row in rows):
            raise UsageError("no threshold found a single movement of the ground truth (spotting F1 0 throughout): "
                             "nothing to choose" + ("; nothing written" if args.write else ""))
        if args.write:
            target = write_threshold(Path(args.weights), float(choice["threshold"]))
            say(f"wrote score_threshold {choice['threshold']:g} to {target}")
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
