"""``python -m fgsl.tune``: choose the score threshold on a validation set, keep it with the weights.

Training ends with a model; which score makes an interval an answer is a separate choice,
and the training default (``config.score_threshold``, 0.3) is not tuned for any data. This
command runs offline inference (``fgsl.infer``'s own functions) on *validation* videos with
known ground truth at each candidate threshold, scores each with the MEGC spotting F1
(``fgsl.evaluate``, strict mode), picks the best (the higher threshold on a tie: fewer false
alarms) and, with ``--write``, stores it as ``score_threshold`` in the weights folder's
``config.json``, which ``fgsl.infer``, the live FGSL spotter and the engines then use.

The validation set must not be the test set: for synthetic data, make it from the training
part of the sources with another seed (``python -m fgsl.data.synthetic ... --part train --seed
11``); the held-out test videos stay untouched until the final evaluation.

``python -m fgsl.tune --weights RUN_DIR --videos VAL/videos/* --gt VAL/annotations.csv
[--thresholds 0.3,0.35,...] [--write]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .cli import UsageError, run
from .config import FGSLConfig
from .data.video import read_centre_crops, resample_indices
from .evaluate import Interval, canonical_id, evaluate, read_intervals
from .infer import spot_frames, subjects_from, to_detections
from .weights import CONFIG_FILE

DEFAULT_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def sweep(engine, videos: list[Path], gt: list[Interval], subjects: dict[str, str],
          thresholds: tuple[float, ...], batch: int = 4) -> list[dict[str, float]]:
    """Spotting TP/FP/FN/F1 (strict) on ``videos`` at each threshold."""
    cfg: FGSLConfig = engine.cfg
    clips = []
    for path in videos:  # read and resample each video once
        video = read_centre_crops(path, cfg.image_size)
        clips.append((path, video, video.frames[resample_indices(video.count, video.fps, cfg.fps)]))
    rows = []
    for threshold in thresholds:
        preds = []
        for path, video, frames in clips:
            intervals = spot_frames(engine, frames, batch, threshold, progress=False, desc=path.name)
            for d in to_detections(intervals, cfg, str(path), video.fps, video.count):
                name = Path(d.video).stem
                preds.append(Interval(canonical_id(subjects.get(name, name)), canonical_id(name), d.onset, d.offset,
                                      d.emotion))
        spotting = evaluate(gt, preds, mode="strict")["spotting"]
        rows.append({"threshold": threshold, **{k: spotting[k] for k in ("tp", "fp", "fn", "f1")}})
    return rows


def best(rows: list[dict[str, float]]) -> dict[str, float]:
    """The row with the highest F1; on a tie the higher threshold (fewer false alarms)."""
    return max(rows, key=lambda r: (round(r["f1"], 12), r["threshold"]))


def write_threshold(folder: Path, threshold: float) -> None:
    """Store ``score_threshold`` in the folder's config.json (the tensors are untouched)."""
    cfg = FGSLConfig.load(folder / CONFIG_FILE)
    (folder / CONFIG_FILE).write_text(dataclasses.replace(cfg, score_threshold=threshold).to_json() + "\n")


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--thresholds must be comma-separated numbers, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise UsageError(f"--thresholds must lie in (0, 1), got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fgsl.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="trained weights folder")
    parser.add_argument("--videos", nargs="+", required=True, help="validation videos (not the test set)")
    parser.add_argument("--gt", required=True, help="their ground truth (annotation table or MEGC CSV)")
    parser.add_argument("--thresholds", default=",".join(str(t) for t in DEFAULT_THRESHOLDS))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--write", action="store_true", help="store the best threshold in RUN_DIR/config.json")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        import engines

        thresholds = _thresholds(args.thresholds)
        engine = engines.open(args.weights, backend=args.backend)
        rows = sweep(engine, [Path(v) for v in args.videos], read_intervals(args.gt), subjects_from(args.gt),
                     thresholds, args.batch)
        print("threshold    tp    fp    fn      F1")
        for r in rows:
            print(f"{r['threshold']:9.3f} {r['tp']:5d} {r['fp']:5d} {r['fn']:5d}  {r['f1']:.4f}")
        choice = best(rows)
        print(f"best: {choice['threshold']:g} (F1 {choice['f1']:.4f})")
        if args.write:
            write_threshold(Path(args.weights), float(choice["threshold"]))
            print(f"wrote score_threshold {choice['threshold']:g} to {Path(args.weights) / CONFIG_FILE}", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
