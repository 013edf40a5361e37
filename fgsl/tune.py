"""``python -m fgsl.tune``: choose the score threshold on a validation set, keep it with the weights.

Which score makes an interval an answer is a choice apart from the weights. ``fgsl.train``
makes it on its own validation split (this module's :func:`sweep` and :func:`best`) and
stores it in the run's ``config.json``; this command makes it again for weights from
elsewhere or for other validation data (another camera, another population). It runs
offline inference (``fgsl.infer``'s own functions) on *validation* videos with known ground
truth, scores each candidate threshold with the MEGC metric (``fgsl.evaluate``, strict
mode), picks the best spotting F1 (then STRS; the higher threshold on a tie: fewer false
alarms) and, with ``--write``, stores it as ``score_threshold`` in the weights folder's
``config.json``, which ``fgsl.infer``, the live FGSL spotter and the engines then use.

The validation set must not be the test set: for synthetic data, make it from the
validation part of the sources, the frames between the training and the test part
(``python -m fgsl.data.synthetic ... --part val --seed 11``); the held-out test videos stay
untouched until the final evaluation.

``python -m fgsl.tune --weights RUN_DIR --videos VAL/videos/* --gt VAL/annotations.csv
[--thresholds 0.3,0.35,...] [--write]``
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from engines.base import add_engine_device_flag

from .cli import UsageError, run
from .config import FGSLConfig
from .data.spec import VideoItem, load_item
from .evaluate import Interval, canonical_id, evaluate, read_intervals
from .infer import merge_windows, subjects_from, to_detections, window_intervals
from .weights import CONFIG_FILE

DEFAULT_THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def sweep(engine, items: list[VideoItem], gt: list[Any], thresholds: tuple[float, ...],
          batch: int = 4) -> list[dict[str, float]]:
    """Strict MEGC scores of ``items`` (frames at the model's fps) at each threshold.

    The network runs once per video (:func:`fgsl.infer.window_intervals` at the lowest
    threshold); each threshold then only merges and scores, giving exactly what
    ``fgsl.infer --threshold T`` + ``fgsl.evaluate`` would.
    """
    cfg: FGSLConfig = engine.cfg
    found = [window_intervals(engine, item.frames, batch, min(thresholds)) for item in items]
    rows = []
    for threshold in thresholds:
        preds = [
            Interval(canonical_id(item.subject), canonical_id(item.name), d.onset, d.offset, d.emotion)
            for item, raw in zip(items, found)
            for d in to_detections(merge_windows(raw, cfg, threshold), cfg, item.name, item.source_fps,
                                   item.source_frames)
        ]
        result = evaluate(gt, preds, mode="strict")
        spotting = result["spotting"]
        rows.append({"threshold": threshold, **{k: spotting[k] for k in ("tp", "fp", "fn")},
                     "f1": _finite(spotting["f1"]), "recognition_f1": _finite(result["recognition"]["f1"]),
                     "strs": _finite(result["strs"])})
    return rows


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


def best(rows: list[dict[str, float]]) -> dict[str, float]:
    """The row with the highest spotting F1, then STRS; on a tie the higher threshold
    (fewer false alarms). Spotting first: it is the live spotter's job, and STRS follows it."""
    return max(rows, key=lambda r: (round(r["f1"], 12), round(r["strs"], 12), r["threshold"]))


def write_threshold(folder: Path, threshold: float) -> None:
    """Store ``score_threshold`` in the folder's config.json (the tensors are untouched)."""
    cfg = FGSLConfig.load(folder / CONFIG_FILE)
    (folder / CONFIG_FILE).write_text(dataclasses.replace(cfg, score_threshold=threshold).to_json() + "\n")


def format_sweep(rows: list[dict[str, float]]) -> str:
    lines = ["threshold    tp    fp    fn  spot F1    STRS"]
    lines += [f"{r['threshold']:9.3f} {r['tp']:5d} {r['fp']:5d} {r['fn']:5d}   {r['f1']:.4f}  {r['strs']:.4f}" for r in rows]
    return "\n".join(lines)


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
    add_engine_device_flag(parser)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--write", action="store_true", help="store the best threshold in RUN_DIR/config.json")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        import engines

        thresholds = _thresholds(args.thresholds)
        gt = read_intervals(args.gt)
        subjects = subjects_from(args.gt)
        engine = engines.open(args.weights, backend=args.backend, device=args.engine_device)
        items = [load_item(engine.cfg, subjects.get(Path(v).stem, Path(v).stem), Path(v).stem, Path(v), [])
                 for v in args.videos]
        rows = sweep(engine, items, gt, thresholds, args.batch)
        print(format_sweep(rows))
        choice = best(rows)
        print(f"best: {choice['threshold']:g} (spotting F1 {choice['f1']:.4f}, STRS {choice['strs']:.4f})")
        if args.write:
            write_threshold(Path(args.weights), float(choice["threshold"]))
            print(f"wrote score_threshold {choice['threshold']:g} to {Path(args.weights) / CONFIG_FILE}", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
