"""MEGC spot-then-recognize (STR) metric: spotting F1, recognition F1 and STRS.

Mode ``megc`` reproduces the official scorer number for number, quirks included, so that
our results compare with published MEGC results:

    genbing99/STRS-Metric, ``strs_metric.py`` (class ``Evaluator``, ``evaluate_STRS``),
    commit eb86468f793400bf46cc13b4be0d32faafe72b8a (2024-06-20, "update eval code").

This is our own code, written from a reading of that file; ``docs/evaluation.md`` explains
the official algorithm step by step. Mode ``strict`` fixes the quirks (ground truth of
subjects without predictions is not counted, one prediction may claim several ground
truths, the result depends on the row order, scikit-learn's 1x1 confusion matrix zeroes a
perfectly recognised class, empty classes count as 0, no true positive gives NaN or a
crash, UAR is the mean precision); each difference is listed with an example in the doc.

Python API (training code calls it in-process)::

    from fgsl.evaluate import read_intervals, evaluate, evaluate_all
    res = evaluate(read_intervals("gt.csv"), read_intervals("pred.csv"), mode="strict")
    res["strs"], res["spotting"]["f1"], res["recognition"]["f1"]

Command line::

    python -m fgsl.evaluate --gt GT.csv --pred PRED.csv [--json] [--emotions a,b,...]
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from fgsl.files import TableTooLarge, read_table_text
from fgsl.startup import quiet_exit, startup_imports

# Importing torch (fgsl.cli) takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from fgsl.cli import ArgumentParser, UsageError, register_user_error, run

#: The MEGC submission columns: the header every prediction file this project writes
#: (``fgsl.infer``, ``realtime.cam --csv``) starts with, and the columns every input CSV
#: must have (any order, any case; other columns are ignored). One constant, so what we
#: write is always what we read.
MEGC_COLUMNS = ("subject", "video", "onset", "offset", "emotion")
MODES = ("megc", "strict")
#: Official threshold: a prediction spots a ground truth when IoU >= 0.5.
IOU_THRESHOLD = 0.5


class EvaluationError(ValueError):
    """A bad ground-truth or prediction file or row; the message names the file, row and reason."""


register_user_error(EvaluationError)


@dataclass(frozen=True)
class MegcInterval:
    """One spotted or annotated expression as the MEGC files hold it: a row of a ground-truth
    or prediction CSV, its inclusive frame range ``[onset, offset]`` in the video's frames.

    Not :class:`fgsl.decode.Interval`, which is a decoded network output (window frames, apex,
    class index, score); :func:`fgsl.infer.to_detections` turns those into these rows.
    """

    subject: str
    video: str
    onset: int
    offset: int
    emotion: str

    @property
    def key(self) -> tuple[str, str]:
        """(subject, video) as compared between the two files, see :func:`canonical_id`."""
        return canonical_id(self.subject), canonical_id(self.video)


Pair = tuple[MegcInterval, MegcInterval]  # (prediction, ground truth)


_INTEGER = re.compile(r"[+-]?\d+")


def canonical_id(value: object) -> str:
    """Subject/video identity: stripped text, integers written without leading zeros.

    The official scorer reads both files with pandas, which turns an all-numeric column
    into integers, so subject ``01`` in one file equals subject ``1`` in the other. We
    apply the same rule to every integer-looking cell, in both modes.
    """
    text = str(value).strip()
    return str(int(text)) if _INTEGER.fullmatch(text) else text


# --------------------------------------------------------------------------- reading


def read_intervals(path: str | Path) -> list[MegcInterval]:
    """Read a CSV with at least the columns subject, video, onset, offset, emotion.

    Covers our annotation table (``fgsl/data/table.py``), the MEGC submission CSV written
    by ``fgsl.infer`` and the official scorer's ``gt.csv``/``pred.csv``. The header is
    matched case-insensitively, cells are stripped, blank lines are skipped. Every problem
    is one :class:`EvaluationError` naming the file, the row (line number) and the reason.
    """
    path = Path(path)
    try:
        text = read_table_text(path)
    except TableTooLarge as exc:
        raise EvaluationError(str(exc)) from None
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise EvaluationError(f"{path}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError:
        raise EvaluationError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read ({exc.strerror or exc})") from None

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse(reader, path)
    except csv.Error as exc:
        raise EvaluationError(f"{path}: row {reader.line_num}: {exc}") from None


def _parse(reader: Any, path: Path) -> list[MegcInterval]:
    header: list[str] | None = None
    for values in reader:
        if any(v.strip() for v in values):
            header = [v.strip().lower() for v in values]
            break
    if header is None:
        raise EvaluationError(f"{path}: empty file, expected a header row with columns {', '.join(MEGC_COLUMNS)}")
    line = reader.line_num
    missing = [c for c in MEGC_COLUMNS if c not in header]
    if missing:
        hint = "; the file seems to have no header row" if any(_INTEGER.fullmatch(h) for h in header) else ""
        raise EvaluationError(
            f"{path}: row {line}: header lacks column(s) {', '.join(missing)} "
            f"(found: {', '.join(header)}){hint}"
        )
    doubled = [c for c in MEGC_COLUMNS if header.count(c) > 1]
    if doubled:
        raise EvaluationError(f"{path}: row {line}: column(s) {', '.join(doubled)} appear more than once in the header")
    where = {c: header.index(c) for c in MEGC_COLUMNS}

    rows = []
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise EvaluationError(f"{path}: row {line}: expected {len(header)} cells like the header, found {len(values)}")
        cell = {c: values[i].strip() for c, i in where.items()}
        for name in ("subject", "video", "emotion"):
            if not cell[name]:
                raise EvaluationError(f"{path}: row {line}: empty {name}")
        onset = _frame(cell["onset"], "onset", path, line)
        offset = _frame(cell["offset"], "offset", path, line)
        if onset > offset:
            raise EvaluationError(f"{path}: row {line}: onset {onset} is after offset {offset}")
        rows.append(MegcInterval(cell["subject"], cell["video"], onset, offset, cell["emotion"]))
    return rows


def _frame(raw: str, name: str, path: Path, line: int) -> int:
    """An integer frame number; ``12.0`` is accepted (pandas writes integer columns with gaps so)."""
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value.is_integer():
        return int(value)
    raise EvaluationError(f"{path}: row {line}: {name} {raw!r} is not an integer frame number")


def _coerce(rows: Iterable[Any], what: str) -> list[MegcInterval]:
    """Accept MegcInterval, any object with the five attributes (e.g. table.Annotation) or a mapping."""
    out = []
    for number, row in enumerate(rows):
        if isinstance(row, MegcInterval):
            item = row
        else:
            values: dict[str, Any] = {
                c: row.get(c) if isinstance(row, Mapping) else getattr(row, c, None) for c in MEGC_COLUMNS
            }
            try:
                if any(v is None for v in values.values()):
                    raise ValueError(f"needs fields {', '.join(MEGC_COLUMNS)}")
                item = MegcInterval(
                    str(values["subject"]), str(values["video"]),
                    int(values["onset"]), int(values["offset"]), str(values["emotion"]),
                )
            except (TypeError, ValueError) as exc:
                raise EvaluationError(f"{what} row {number}: {exc}") from None
        if item.onset > item.offset:
            raise EvaluationError(f"{what} row {number}: onset {item.onset} is after offset {item.offset}")
        out.append(item)
    return out


# --------------------------------------------------------------------------- spotting


def iou(a: MegcInterval, b: MegcInterval) -> Fraction:
    """Temporal IoU of inclusive integer frame ranges, exact (the official counts frames with numpy sets)."""
    inter = max(0, min(a.offset, b.offset) - max(a.onset, b.onset) + 1)
    union = (a.offset - a.onset + 1) + (b.offset - b.onset + 1) - inter
    return Fraction(inter, union) if union > 0 else Fraction(0)


def _group(rows: Sequence[MegcInterval]) -> dict[tuple[str, str], list[MegcInterval]]:
    """Rows per (subject, video), each list in file order (the official iterates in that order)."""
    groups: dict[tuple[str, str], list[MegcInterval]] = {}
    for row in rows:
        groups.setdefault(row.key, []).append(row)
    return groups


def _match_megc(gts: list[MegcInterval], preds: list[MegcInterval], threshold: Fraction) -> tuple[list[Pair], int, int]:
    """Official matching of one video: first come, first served, no break after a match.

    Predictions are visited in file order; each one is paired with *every* still-unmatched
    ground truth (in file order) with IoU >= threshold. A prediction that claims nothing is
    a false positive. Returns (pairs, number of predictions that claimed two or more, FP).
    """
    matched = [False] * len(gts)
    pairs: list[Pair] = []
    multi = fp = 0
    for p in preds:
        claimed = 0
        for i, g in enumerate(gts):
            if not matched[i] and iou(p, g) >= threshold:
                matched[i] = True
                pairs.append((p, g))
                claimed += 1
        fp += claimed == 0
        multi += claimed > 1
    return pairs, multi, fp


def _content_order(row: MegcInterval) -> tuple[int, int, str]:
    return row.onset, row.offset, row.emotion


def _match_strict(gts: list[MegcInterval], preds: list[MegcInterval], threshold: Fraction) -> list[Pair]:
    """One-to-one matching, highest IoU first, independent of the row order.

    Both lists are sorted by content (onset, offset, emotion) so that ties are broken the
    same way whatever order the files list their rows in; rows with equal content are
    interchangeable, so the result is a function of the multisets alone.
    """
    gts = sorted(gts, key=_content_order)
    preds = sorted(preds, key=_content_order)
    candidates = []
    for i, p in enumerate(preds):
        for j, g in enumerate(gts):
            overlap = iou(p, g)
            if overlap >= threshold:
                candidates.append((-overlap, i, j))
    candidates.sort()
    used_p: set[int] = set()
    used_g: set[int] = set()
    pairs: list[Pair] = []
    for _, i, j in candidates:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            pairs.append((preds[i], gts[j]))
    return pairs


def _ratios(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 with 0 for 0/0, as the official ``calculate_metrics``."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _mean(values: list[float]) -> float:
    """Exactly rounded mean (independent of class order); NaN for no values, as numpy."""
    return math.fsum(values) / len(values) if values else math.nan


# --------------------------------------------------------------------------- recognition


def _recognition(pairs: list[Pair], classes: list[str], mode: str, warnings: list[str]) -> dict[str, Any]:
    """Per-class binary precision/recall over the spotting-TP pairs, macro-averaged.

    Pairs whose ground-truth emotion is outside ``classes`` are dropped (official). The
    recognition F1 is 2PR/(P+R) of the mean precision P and mean recall R, not the mean
    of per-class F1 (that one is reported as ``uf1``).
    """
    kept = [(p.emotion, g.emotion) for p, g in pairs if g.emotion in classes]
    n = len(kept)
    per_class: dict[str, dict[str, Any]] = {}
    degenerate = []
    for c in classes:
        tp = sum(1 for pe, ge in kept if pe == c and ge == c)
        fp = sum(1 for pe, ge in kept if pe == c and ge != c)
        fn = sum(1 for pe, ge in kept if pe != c and ge == c)
        counted = True
        if mode == "megc":
            # sklearn's confusion_matrix(gt, pred).ravel() has 4 cells only when both labels
            # 0 and 1 occur; otherwise the official's bare except sets TP = FP = FN = 0.
            if n == 0 or tp + fp + fn == 0 or tp == n:
                if n and tp == n:
                    degenerate.append(c)
                tp = fp = fn = 0
        else:
            counted = tp + fp + fn > 0  # a class absent from the TP pairs says nothing
        precision, recall, f1 = _ratios(tp, fp, fn)
        per_class[c] = dict(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1, counted=counted)

    used = [v for v in per_class.values() if v["counted"]]
    precision = _mean([v["precision"] for v in used])
    recall = _mean([v["recall"] for v in used])
    uf1 = _mean([v["f1"] for v in used])
    if mode == "megc":
        f1 = 2 * precision * recall / (precision + recall) if precision + recall != 0 else math.nan
        uar = precision  # official: uar = np.mean(precision_list)
        correct = sum(1 for pe, ge in kept if pe == ge)
        wrong = sum(1 for pe, ge in kept if pe != ge and pe in classes)
        counts = dict(tp=correct, fp=wrong, fn=wrong)  # official "FN analysis" repeats FP
        for c in degenerate:
            warnings.append(
                f"class {c!r}: every spotting-TP pair is {c!r} and recognised so; the official scorer "
                "(1x1 confusion matrix) scores it precision = recall = 0"
            )
        if math.isnan(f1) and pairs:  # without pairs the official crashes first (see evaluate)
            warnings.append(
                "recognition F1 is NaN in the official scorer (mean precision + mean recall = 0, "
                "or no class), so STRS is NaN"
            )
    else:
        if not used:
            precision = recall = uf1 = 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        uar = recall
        counts = dict(
            tp=sum(v["tp"] for v in used), fp=sum(v["fp"] for v in used), fn=sum(v["fn"] for v in used)
        )
    return dict(**counts, precision=precision, recall=recall, f1=f1, uf1=uf1, uar=uar, classes=per_class)


# --------------------------------------------------------------------------- public API


def _subject_mismatches(gt_by_video: dict[tuple[str, str], list[Any]],
                        pred_by_video: dict[tuple[str, str], list[Any]]) -> list[str]:
    """Predictions for a video the ground truth has under another subject: a wrong subject
    column (a video's name, ``0``), not a missing video. Videos are matched by (subject, video)."""
    gt_subjects: dict[str, set[str]] = {}
    for subject, video in gt_by_video:
        gt_subjects.setdefault(video, set()).add(subject)
    out = []
    for subject, video in sorted(pred_by_video):  # (sorted: the result must not depend on row order)
        if (subject, video) not in gt_by_video and video in gt_subjects:
            known = sorted(gt_subjects[video])
            under = "/".join(known[:3]) + (f"/... ({len(known)} subjects)" if len(known) > 3 else "")
            out.append(f"video {video!r} is in the ground truth under subject {under!r}, "
                       f"not {subject!r}: fix the prediction file's subject column (fgsl.infer and "
                       "realtime.cam take --subjects-from GT.csv)")
    return out[:3] + ([f"... and {len(out) - 3} more video(s) under another subject"] if len(out) > 3 else [])


def repeated_rows(gt: Sequence[MegcInterval]) -> str | None:
    """The warning for ground-truth rows that repeat an earlier row exactly (no data set has
    two identical intervals: a row copied twice in the file), or None."""
    repeated = len(gt) - len(set(gt))
    return (f"{repeated} ground-truth row(s) repeat an earlier row exactly; each copy counts as an interval of its "
            "own") if repeated else None


def evaluate(
    gt_rows: Iterable[Any],
    pred_rows: Iterable[Any],
    mode: str = "megc",
    emotions: Sequence[str] | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[str, Any]:
    """Score predictions against ground truth; see the module docstring for the modes.

    ``gt_rows``/``pred_rows``: :class:`MegcInterval` objects, objects with attributes
    subject, video, onset, offset, emotion (e.g. ``fgsl.data.table.Annotation``) or
    mappings with those keys. ``emotions``: the recognition classes; default every
    emotion occurring in the ground truth file (official), sorted.

    Returns ``{"mode", "emotions", "spotting": {tp, fp, fn, precision, recall, f1},
    "recognition": {tp, fp, fn, precision, recall, f1, uf1, uar, classes}, "strs",
    "warnings"}``. NaN (megc only) marks a value the official scorer yields as NaN or
    cannot compute (it crashes when there is no spotting true positive).
    """
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    gt = _coerce(gt_rows, "ground truth")
    pred = _coerce(pred_rows, "prediction")
    if emotions is not None:
        classes = list(dict.fromkeys(e.strip() for e in emotions))
    else:  # official: set(gt_df["emotion"].unique()); sorted so that row order cannot matter
        classes = sorted({g.emotion for g in gt})
    threshold = Fraction(iou_threshold)
    gt_by_video, pred_by_video = _group(gt), _group(pred)
    warnings: list[str] = [w for w in [repeated_rows(gt)] if w]
    pairs: list[Pair] = []
    fp = fn = 0

    if mode == "megc":
        # The official loops over the subjects of the *prediction* file and, for each,
        # over the videos of the *ground truth*: other GT and predictions are never seen.
        pred_subjects = {key[0] for key in pred_by_video}
        multi = unseen_gt = 0
        for key, gts in gt_by_video.items():
            if key[0] not in pred_subjects:
                unseen_gt += len(gts)
                continue
            video_pairs, video_multi, video_fp = _match_megc(gts, pred_by_video.get(key, []), threshold)
            pairs += video_pairs
            multi += video_multi
            fp += video_fp
            fn += len(gts) - len(video_pairs)
        unseen_pred = sum(len(v) for k, v in pred_by_video.items() if k not in gt_by_video)
        if unseen_gt:
            warnings.append(f"{unseen_gt} ground-truth interval(s) of subjects without any prediction are not counted")
        if unseen_pred:
            warnings.append(f"{unseen_pred} prediction(s) in videos absent from the ground truth are ignored")
            warnings += _subject_mismatches(gt_by_video, pred_by_video)
        if multi:
            warnings.append(f"{multi} prediction(s) matched more than one ground truth (one TP each)")
        if not pairs and classes:
            warnings.append(
                "no spotting true positive: the official scorer stops with KeyError('gt') here; "
                "recognition F1 and STRS are reported as NaN"
            )
    else:
        for key in dict.fromkeys([*gt_by_video, *pred_by_video]):
            gts, preds = gt_by_video.get(key, []), pred_by_video.get(key, [])
            video_pairs = _match_strict(gts, preds, threshold)
            pairs += video_pairs
            fp += len(preds) - len(video_pairs)
            fn += len(gts) - len(video_pairs)
        unseen_pred = sum(len(v) for k, v in pred_by_video.items() if k not in gt_by_video)
        if unseen_pred:
            warnings.append(f"{unseen_pred} prediction(s) in videos absent from the ground truth count as FP")
            warnings += _subject_mismatches(gt_by_video, pred_by_video)

    tp = len(pairs)
    precision, recall, f1 = _ratios(tp, fp, fn)
    recognition = _recognition(pairs, classes, mode, warnings)
    return {
        "mode": mode,
        "emotions": classes,
        "spotting": dict(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1),
        "recognition": recognition,
        "strs": f1 * recognition["f1"],
        "warnings": warnings,
    }


def evaluate_all(
    gt_rows: Iterable[Any], pred_rows: Iterable[Any], emotions: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Both modes: ``{"megc": ..., "strict": ...}`` (what ``--json`` prints)."""
    gt, pred = list(gt_rows), list(pred_rows)
    return {mode: evaluate(gt, pred, mode=mode, emotions=emotions) for mode in MODES}


def to_json(value: Any) -> Any:
    """Replace NaN by None (JSON has no NaN; null reads as 'undefined')."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Readable side-by-side table of the modes in ``results``, then per-class rows and notes."""
    modes = list(results)

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return str(value)

    lines = [f"{'':<24}" + "".join(f"{m:>10}" for m in modes)]

    def row(label: str, get: Any) -> None:
        lines.append(f"{label:<24}" + "".join(f"{fmt(get(results[m])):>10}" for m in modes))

    for name in ("tp", "fp", "fn", "precision", "recall", "f1"):
        row(f"spotting {name}", lambda r, n=name: r["spotting"][n])
    for name in ("precision", "recall", "f1", "uf1", "uar"):
        row(f"recognition {name}", lambda r, n=name: r["recognition"][n])
    row("STRS", lambda r: r["strs"])
    classes = results[modes[0]]["emotions"]
    if classes:
        lines += ["", f"{'class P / R / F1':<24}" + "".join(f"{m:>22}" for m in modes)]
        for c in classes:
            cells = []
            for m in modes:
                v = results[m]["recognition"]["classes"][c]
                text = f"{v['precision']:.2f} / {v['recall']:.2f} / {v['f1']:.2f}" if v["counted"] else "not counted"
                cells.append(f"{text:>22}")
            lines.append(f"{c:<24}" + "".join(cells))
    for m in modes:
        for w in results[m]["warnings"]:
            lines.append(f"{m}: {w}")
    return "\n".join(lines)


def _parse_emotions(text: str | None) -> list[str] | None:
    if text is None:
        return None
    emotions = [e.strip() for e in text.split(",") if e.strip()]
    if not emotions:
        raise UsageError("--emotions needs at least one emotion, e.g. --emotions negative,positive,surprise")
    return emotions


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m fgsl.evaluate",
        description="MEGC spot-then-recognize metric (spotting F1, recognition F1, STRS), "
        "official 'megc' mode and 'strict' mode; see docs/evaluation.md.",
    )
    parser.add_argument("--gt", required=True, type=Path, help="ground-truth CSV (subject,video,onset,offset,emotion)")
    parser.add_argument("--pred", required=True, type=Path, help="prediction CSV, same columns")
    parser.add_argument("--json", action="store_true", help='print {"megc": {...}, "strict": {...}} as JSON')
    parser.add_argument(
        "--emotions", help="comma-separated recognition classes (default: every emotion in the ground truth)"
    )
    args = parser.parse_args(argv)
    emotions = _parse_emotions(args.emotions)
    results = evaluate_all(read_intervals(args.gt), read_intervals(args.pred), emotions=emotions)
    if args.json:
        print(json.dumps(to_json(results), indent=2, allow_nan=False))
    else:
        print(format_table(results))
    return 0


if __name__ == "__main__":
    quiet_exit(run(main))
