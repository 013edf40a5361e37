"""MEGC spot-then-recognize metric (fgsl.evaluate): hand-worked examples, the official
scorer's numbers, properties (hypothesis) and the command line.

Every number asserted for mode ``megc`` was also produced by the official scorer
(genbing99/STRS-Metric strs_metric.py @ eb86468f, run with pandas 1.5.3, scikit-learn 1.2.2,
numpy 1.26.4) on the same input; the arithmetic is written out beside each example.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgsl import cli
from fgsl.evaluate import (
    EvaluationError,
    MegcInterval,
    evaluate,
    evaluate_all,
    format_table,
    read_intervals,
    to_json,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "evaluate"
HEADER = "subject,video,onset,offset,emotion\n"


def rows(text: str) -> list[MegcInterval]:
    """Intervals from 'subject,video,onset,offset,emotion' lines (no header)."""
    out = []
    for line in text.strip().splitlines():
        s, v, on, off, e = (x.strip() for x in line.split(","))
        out.append(MegcInterval(s, v, int(on), int(off), e))
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def summary(res: dict) -> tuple:
    s, r = res["spotting"], res["recognition"]
    return (s["tp"], s["fp"], s["fn"], s["precision"], s["recall"], s["f1"],
            r["precision"], r["recall"], r["f1"], res["strs"])


def approx(*values: float) -> tuple:
    return tuple(pytest.approx(v, rel=1e-12, abs=1e-15) if isinstance(v, float) else v for v in values)


# ----------------------------------------------------------------- worked example
#
# Ground truth (GT)                         Predictions
#   g1  s1 v1 [10,20] negative                p1  s1 v1 [ 12, 22] negative
#   g2  s1 v1 [50,60] positive                p2  s1 v1 [ 52, 58] negative
#   g3  s1 v2 [ 0, 4] surprise                p3  s1 v1 [100,110] positive
#   g4  s1 v2 [ 5, 9] surprise                p4  s1 v2 [  0,  9] surprise
#   g5  s2 v3 [30,40] others                  p5  s1 v9 [  0, 10] positive
#
# IoU on inclusive frame ranges:
#   p1-g1: overlap [12,20] = 9 frames, union [10,22] = 13 -> 9/13 = 0.69 >= 0.5
#   p2-g2: overlap [52,58] = 7, union [50,60] = 11 -> 0.64
#   p3: overlaps nothing
#   p4-g3: overlap 5, union 10 -> 0.5 (counts: >= 0.5); p4-g4: likewise 0.5
#   p5: video v9 has no ground truth; subject s2 has no prediction.
#
# megc (official): subjects of the prediction file only (s1), videos of the GT (v1, v2):
#   v1: p1->g1, p2->g2, p3 FP.  v2: p4 claims g3 AND g4 (no break after a match): 2 TPs.
#   v9 is never visited (p5 ignored); s2 is never visited (g5 ignored).
#   spotting TP 4, FP 1, FN 0: P = 4/5, R = 4/4, F1 = 2*0.8*1/1.8 = 8/9
#   classes = GT emotions {negative, others, positive, surprise}; TP pairs (gt, pred):
#     (neg, neg), (pos, neg), (sur, sur), (sur, sur)
#   negative: TP 1, FP 1, FN 0 -> P 1/2, R 1      positive: TP 0, FN 1 -> P 0, R 0
#   surprise: TP 2 -> P 1, R 1                    others: absent -> P 0, R 0 (counted!)
#   P = (0.5+0+1+0)/4 = 0.375, R = (1+0+1+0)/4 = 0.5, F1 = 2*0.375*0.5/0.875 = 3/7
#   UF1 = (2/3+0+1+0)/4 = 5/12; UAR (official = mean precision) = 0.375
#   "TP/FP/FN analysis" = 3 correct pairs, 1 wrong pair, FN repeats FP = 1
#   STRS = 8/9 * 3/7 = 8/21
#
# strict: every video of either file, one-to-one, best IoU first:
#   v1: as above (2 TP, p3 FP). v2: p4 ties 0.5 with g3 and g4 -> g3 (earlier onset); g4 FN.
#   v9: p5 FP. v3: g5 FN.  TP 3, FP 2, FN 2 -> P = R = F1 = 3/5
#   pairs (neg, neg), (pos, neg), (sur, sur); "others" is absent from the pairs: not counted
#   negative P 1/2 R 1; positive P 0 (0/0) R 0; surprise P 1 R 1
#   P = 1.5/3 = 0.5, R = 2/3, F1 = 2*0.5*(2/3)/(7/6) = 4/7; UAR = mean recall = 2/3
#   STRS = 3/5 * 4/7 = 12/35

WORKED_GT = rows("""
    s1,v1,10,20,negative
    s1,v1,50,60,positive
    s1,v2,0,4,surprise
    s1,v2,5,9,surprise
    s2,v3,30,40,others
""")
WORKED_PRED = rows("""
    s1,v1,12,22,negative
    s1,v1,52,58,negative
    s1,v1,100,110,positive
    s1,v2,0,9,surprise
    s1,v9,0,10,positive
""")


def test_worked_example_megc():
    res = evaluate(WORKED_GT, WORKED_PRED, mode="megc")
    assert res["emotions"] == ["negative", "others", "positive", "surprise"]
    assert summary(res) == approx(4, 1, 0, 0.8, 1.0, 8 / 9, 0.375, 0.5, 3 / 7, 8 / 21)
    rec = res["recognition"]
    assert (rec["tp"], rec["fp"], rec["fn"]) == (3, 1, 1)
    assert rec["uf1"] == pytest.approx(5 / 12) and rec["uar"] == pytest.approx(0.375)
    assert rec["classes"]["others"] == dict(tp=0, fp=0, fn=0, precision=0.0, recall=0.0, f1=0.0, counted=True)
    text = " ".join(res["warnings"])
    assert "1 ground-truth interval(s) of subjects without any prediction" in text
    assert "1 prediction(s) in videos absent" in text and "1 prediction(s) matched more than one" in text


def test_worked_example_strict():
    res = evaluate(WORKED_GT, WORKED_PRED, mode="strict")
    assert summary(res) == approx(3, 2, 2, 0.6, 0.6, 0.6, 0.5, 2 / 3, 4 / 7, 12 / 35)
    rec = res["recognition"]
    assert rec["uar"] == pytest.approx(2 / 3) and rec["uf1"] == pytest.approx(5 / 9)
    assert (rec["tp"], rec["fp"], rec["fn"]) == (2, 1, 1)
    assert rec["classes"]["others"]["counted"] is False
    assert rec["classes"]["positive"] == dict(tp=0, fp=0, fn=1, precision=0.0, recall=0.0, f1=0.0, counted=True)


def test_worked_example_restricted_emotions():
    # --emotions negative,surprise: pairs whose GT is positive are dropped.
    # megc pairs (neg,neg), (sur,sur), (sur,sur): both classes P = R = 1 -> F1 1, STRS = 8/9
    # strict pairs (neg,neg), (sur,sur) -> F1 1, STRS = 3/5
    megc = evaluate(WORKED_GT, WORKED_PRED, mode="megc", emotions=["negative", "surprise"])
    strict = evaluate(WORKED_GT, WORKED_PRED, mode="strict", emotions=["negative", "surprise"])
    assert (megc["recognition"]["f1"], megc["strs"]) == approx(1.0, 8 / 9)
    assert (megc["recognition"]["tp"], megc["recognition"]["fp"]) == (3, 0)
    assert (strict["recognition"]["f1"], strict["strs"]) == approx(1.0, 0.6)


# ----------------------------------------------------------------- quirks, one at a time


def test_megc_depends_on_prediction_order_strict_does_not():
    # video a: GT [0,9] negative; p_wide [0,13] positive (IoU 10/14) and p_close [1,9] negative (IoU 9/10)
    # video b: GT [0,9] positive, prediction identical.   Spotting either way: TP 2, FP 1, FN 0,
    # P 2/3, R 1, F1 0.8.
    # megc, p_wide first: it takes GT a -> pairs (neg, pos), (pos, pos)
    #   negative: FN 1 -> P 0 R 0; positive: TP 1 FP 1 -> P 1/2 R 1; P 0.25 R 0.5 F1 1/3; STRS 0.8/3
    # megc, p_close first (and strict, best IoU first): pairs (neg, neg), (pos, pos) -> F1 1, STRS 0.8
    gt = rows("1,a,0,9,negative\n1,b,0,9,positive")
    wide, exact, other = rows("1,a,0,13,positive\n1,a,1,9,negative\n1,b,0,9,positive")
    first = evaluate(gt, [wide, exact, other], mode="megc")
    second = evaluate(gt, [exact, wide, other], mode="megc")
    assert summary(first) == approx(2, 1, 0, 2 / 3, 1.0, 0.8, 0.25, 0.5, 1 / 3, 0.8 / 3)
    assert summary(second) == approx(2, 1, 0, 2 / 3, 1.0, 0.8, 1.0, 1.0, 1.0, 0.8)
    for preds in ([wide, exact, other], [exact, wide, other]):
        assert summary(evaluate(gt, preds, mode="strict")) == approx(2, 1, 0, 2 / 3, 1.0, 0.8, 1.0, 1.0, 1.0, 0.8)


def test_strict_breaks_ties_by_frames_not_rows():
    # prediction [0,9] positive has IoU 5/10 with both GT [0,4] negative and GT [5,9] positive.
    # megc: the first GT row wins AND the second too (no break): 2 TPs, pairs (neg, pos), (pos, pos).
    # strict: one GT only, the earlier onset [0,4] whatever the row order: TP 1, FN 1,
    #   pair (neg, pos): negative R 0 (P 0/0 = 0), positive P 0 -> recognition F1 0.
    gt = rows("1,a,0,4,negative\n1,a,5,9,positive")
    pred = rows("1,a,0,9,positive")
    for order in (gt, gt[::-1]):
        strict = evaluate(order, pred, mode="strict")
        assert summary(strict) == approx(1, 0, 1, 1.0, 0.5, 2 / 3, 0.0, 0.0, 0.0, 0.0)
        assert strict["recognition"]["classes"]["negative"]["fn"] == 1
    assert evaluate(gt, pred, mode="megc")["spotting"]["tp"] == 2


def test_single_class_perfect_is_nan_in_megc_one_in_strict():
    # Two GT "others", predicted exactly. Spotting F1 1. For class "others" the binary labels
    # are all 1 in both lists: sklearn's confusion matrix is 1x1, the official except sets
    # TP = FP = FN = 0 -> P = R = 0 -> F1 = 0/0 = NaN -> STRS NaN. Strict: P = R = F1 = 1.
    gt = rows("1,a,0,9,others\n1,b,0,9,others")
    megc = evaluate(gt, gt, mode="megc")
    assert megc["spotting"]["f1"] == 1.0
    assert (megc["recognition"]["precision"], megc["recognition"]["recall"]) == (0.0, 0.0)
    assert math.isnan(megc["recognition"]["f1"]) and math.isnan(megc["strs"])
    assert megc["recognition"]["tp"] == 2  # the official "TP analysis" is unaffected
    assert any("1x1 confusion matrix" in w for w in megc["warnings"])
    assert summary(evaluate(gt, gt, mode="strict")) == approx(2, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_zero_true_positives():
    # GT [0,9], prediction [50,60]: TP 0, FP 1, FN 1. The official stops with KeyError('gt');
    # megc reports NaN recognition F1/STRS with a warning; strict reports 0.
    gt, pred = rows("1,a,0,9,negative"), rows("1,a,50,60,negative")
    megc = evaluate(gt, pred, mode="megc")
    assert megc["spotting"] == dict(tp=0, fp=1, fn=1, precision=0.0, recall=0.0, f1=0.0)
    assert math.isnan(megc["strs"]) and any("KeyError" in w for w in megc["warnings"])
    strict = evaluate(gt, pred, mode="strict")
    assert summary(strict) == (0, 1, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_empty_ground_truth():
    # No GT: no class, nothing visited. The official returns (no crash) spotting 0/0/0 and NaN
    # for every recognition value (numpy mean of an empty list); strict counts the FP.
    pred = rows("1,a,0,9,negative")
    megc = evaluate([], pred, mode="megc")
    assert megc["spotting"]["fp"] == 0 and megc["emotions"] == []
    assert all(math.isnan(megc["recognition"][k]) for k in ("precision", "recall", "f1", "uf1", "uar"))
    assert math.isnan(megc["strs"]) and not any("KeyError" in w for w in megc["warnings"])
    assert summary(evaluate([], pred, mode="strict")) == (0, 1, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_integer_ids_compare_like_pandas():
    # pandas reads an all-numeric column as integers: subject "007" in one file is 7 in the other.
    gt, pred = rows("007,01,0,9,a\n007,01,20,29,b"), rows("7,1,0,9,a\n7,1,20,29,b")
    for mode in ("megc", "strict"):
        assert evaluate(gt, pred, mode=mode)["strs"] == 1.0


def test_accepts_annotation_objects_and_mappings():
    from fgsl.data.table import Annotation

    gt = [Annotation("1", "a", 0, 4, 9, "micro", "negative"), Annotation("1", "b", 0, 4, 9, "micro", "positive")]
    pred = [dict(subject=1, video="a", onset=0, offset=9, emotion="negative"),
            dict(subject="1", video="b", onset=1, offset=9, emotion="positive")]
    assert evaluate(gt, pred, mode="strict")["strs"] == 1.0
    with pytest.raises(EvaluationError, match="onset 9 is after offset 0"):
        evaluate(gt, [dict(subject=1, video="a", onset=9, offset=0, emotion="x")])
    with pytest.raises(EvaluationError, match="prediction row 0: needs fields"):
        evaluate(gt, [dict(subject=1, video="a", onset=0, offset=9)])
    with pytest.raises(cli.UsageError):
        evaluate(gt, gt, mode="loose")


# ----------------------------------------------------------------- the official scorer's numbers

README_GT = rows("""
    1,EP02_01f,45,85,happiness
    1,EP03_02,130,160,others
    1,EP04_02,20,75,others
    2,EP01_11f,45,95,repression
    2,EP02_04f,30,140,repression
""")
README_PRED = rows("""
    1,EP02_01f,10,70,happiness
    1,EP03_02,100,170,others
    1,EP04_02,0,70,others
    2,EP01_11f,20,90,happiness
    2,EP02_04f,70,140,happiness
""")


def test_official_readme_example():
    # The example in genbing99/STRS-Metric README.md ("STRS: 0.2").
    # IoU: 26/76, 31/71 (misses), 51/76, 46/76, 71/111 (hits) -> TP 3 FP 2 FN 2, F1 0.6
    # pairs (others, others), (repression, happiness) x2:
    #   happiness P 0 (FP 2) R 0; others P 1 R 1; repression P 0 R 0 (FN 2)
    #   P = R = 1/3 -> F1 1/3 -> STRS 0.2
    res = evaluate(README_GT, README_PRED, mode="megc")
    assert summary(res) == approx(3, 2, 2, 0.6, 0.6, 0.6, 1 / 3, 1 / 3, 1 / 3, 0.19999999999999998)
    assert (res["recognition"]["tp"], res["recognition"]["fp"], res["recognition"]["fn"]) == (1, 2, 2)
    assert round(res["strs"], 4) == 0.2


def test_fixture_matches_official():
    # Synthetic data (seeded; GT in our annotation-table layout with apex/type/aus, predictions
    # in the MEGC layout; subject 007 vs 7; one subject without predictions; one prediction over
    # two adjacent GTs; one prediction in an unknown video). Numbers printed by the official
    # scorer on these two files.
    gt = read_intervals(FIXTURES / "gt_table.csv")
    pred = read_intervals(FIXTURES / "pred_megc.csv")
    res = evaluate(gt, pred, mode="megc")
    assert summary(res) == approx(
        14, 7, 6, 0.6666666666666666, 0.7, 0.6829268292682926,
        0.8333333333333333, 0.75, 0.7894736842105263, 0.5391527599486521,
    )
    rec = res["recognition"]
    assert (rec["tp"], rec["fp"], rec["fn"]) == (11, 3, 3)
    assert (rec["uf1"], rec["uar"]) == approx(0.7416666666666667, 0.8333333333333333)

    res = evaluate(gt, pred, mode="megc", emotions=["negative", "positive", "surprise"])
    assert summary(res) == approx(
        14, 7, 6, 0.6666666666666666, 0.7, 0.6829268292682926,
        0.9333333333333332, 0.8888888888888888, 0.9105691056910569, 0.6218520721792583,
    )
    assert (res["recognition"]["uf1"], res["recognition"]["uar"]) == approx(0.8962962962962964, 0.9333333333333332)

    # strict: + the 10 GT of subject 4 and the second half claimed by the wide prediction as FN,
    # the unknown-video prediction as FP: TP 13, FP 8, FN 17.
    strict = evaluate(gt, pred, mode="strict")
    assert strict["spotting"]["tp"] == 13 and strict["spotting"]["fp"] == 8 and strict["spotting"]["fn"] == 17


STRS_METRIC_DIR = os.environ.get("FGSL_STRS_METRIC_DIR")


@pytest.mark.skipif(not STRS_METRIC_DIR, reason="needs the official scorer's data, which cannot ship (no licence): set "
                                                "FGSL_STRS_METRIC_DIR to a checkout of genbing99/STRS-Metric")
def test_official_repository_data():
    # data/gt.csv and data/pred.csv of the official repository (not vendored: the repository
    # has no licence and the annotations come from a licensed data set). `python main.py` there
    # prints STRS 0.3862, TP/FP/FN spotting 159/85/85, TP/FP/FN analysis 96/63/63, ...
    base = Path(STRS_METRIC_DIR) / "data"
    gt, pred = read_intervals(base / "gt.csv"), read_intervals(base / "pred.csv")
    res = evaluate(gt, pred, mode="megc")
    assert summary(res) == approx(
        159, 85, 85, 0.6516393442622951, 0.6516393442622951, 0.6516393442622951,
        0.5983375104427736, 0.5871781025751794, 0.5927052840526766, 0.38623008264088354,
    )
    rec = res["recognition"]
    assert (rec["tp"], rec["fp"], rec["fn"]) == (96, 63, 63)
    assert (rec["uf1"], rec["uar"]) == approx(0.576624668619934, 0.5983375104427736)
    res = evaluate(gt, pred, mode="megc", emotions=["happiness", "disgust", "others", "fear"])
    assert (res["recognition"]["f1"], res["strs"]) == approx(0.45638339716740106, 0.2973973776623638)


# ----------------------------------------------------------------- properties

SUBJECTS, VIDEOS, EMOTIONS = ("1", "2", "3"), ("a", "b"), ("negative", "positive", "surprise")


@st.composite
def interval(draw: st.DrawFn) -> MegcInterval:
    onset = draw(st.integers(0, 30))  # short range: many overlaps and IoU ties
    return MegcInterval(draw(st.sampled_from(SUBJECTS)), draw(st.sampled_from(VIDEOS)),
                    onset, onset + draw(st.integers(0, 10)), draw(st.sampled_from(EMOTIONS)))


interval_lists = st.lists(interval(), max_size=12)


@st.composite
def disjoint_gt(draw: st.DrawFn) -> list[MegcInterval]:
    """Ground truth whose intervals never overlap within a video, with at least two emotions."""
    out = []
    for slot in draw(st.lists(st.tuples(st.sampled_from(SUBJECTS), st.sampled_from(VIDEOS),
                                        st.integers(0, 20)), min_size=2, max_size=10, unique=True)):
        subject, video, k = slot
        length = draw(st.integers(0, 15))
        out.append(MegcInterval(subject, video, 20 * k, 20 * k + length, draw(st.sampled_from(EMOTIONS))))
    emotions = {g.emotion for g in out}
    if len(emotions) == 1:
        g = out[0]
        out[0] = MegcInterval(g.subject, g.video, g.onset, g.offset, next(e for e in EMOTIONS if e not in emotions))
    return out


def keep_video_order(data: st.DataObject, items: list[MegcInterval]) -> list[MegcInterval]:
    """A random permutation that keeps the relative order of rows of the same video."""
    shuffled = data.draw(st.permutations(items))
    queues: dict[tuple[str, str], list[MegcInterval]] = {}
    for row in items:
        queues.setdefault(row.key, []).append(row)
    return [queues[row.key].pop(0) for row in shuffled]


@settings(max_examples=300, deadline=None)
@given(st.data(), interval_lists, interval_lists)
def test_strict_ignores_row_order(data, gt, pred):
    expected = evaluate(gt, pred, mode="strict")
    assert evaluate(data.draw(st.permutations(gt)), data.draw(st.permutations(pred)), mode="strict") == expected


@settings(max_examples=150, deadline=None)
@given(st.data(), interval_lists, interval_lists)
def test_megc_ignores_order_of_videos_and_subjects(data, gt, pred):
    # The official result depends on the order of rows *within* a video (see
    # test_megc_depends_on_prediction_order_strict_does_not), not on anything else.
    expected = to_json(evaluate(gt, pred, mode="megc"))
    assert to_json(evaluate(keep_video_order(data, gt), keep_video_order(data, pred), mode="megc")) == expected


@settings(max_examples=100, deadline=None)
@given(st.data(), interval_lists.filter(bool))
def test_perfect_predictions_strict(data, gt):
    res = evaluate(gt, data.draw(st.permutations(gt)), mode="strict")
    assert (res["spotting"]["f1"], res["recognition"]["f1"], res["strs"]) == (1.0, 1.0, 1.0)


@settings(max_examples=100, deadline=None)
@given(st.data(), disjoint_gt())
def test_perfect_predictions_megc(data, gt):
    res = evaluate(gt, data.draw(st.permutations(gt)), mode="megc")
    assert (res["spotting"]["f1"], res["recognition"]["f1"], res["strs"]) == (1.0, 1.0, 1.0)


@settings(max_examples=50, deadline=None)
@given(interval_lists)
def test_no_predictions(gt):
    strict = evaluate(gt, [], mode="strict")
    assert strict["spotting"] == dict(tp=0, fp=0, fn=len(gt), precision=0.0, recall=0.0, f1=0.0)
    assert strict["recognition"]["f1"] == 0.0 and strict["strs"] == 0.0
    megc = evaluate(gt, [], mode="megc")
    # official: no subject has a prediction, so nothing is visited (FN 0); it then crashes
    assert megc["spotting"] == dict(tp=0, fp=0, fn=0, precision=0.0, recall=0.0, f1=0.0)
    assert math.isnan(megc["recognition"]["f1"]) and math.isnan(megc["strs"])


@settings(max_examples=100, deadline=None)
@given(interval_lists, interval_lists)
def test_no_match_across_videos(gt, pred):
    moved = [MegcInterval(p.subject, "elsewhere-" + p.video, p.onset, p.offset, p.emotion) for p in pred]
    for mode in ("megc", "strict"):
        assert evaluate(gt, moved, mode=mode)["spotting"]["tp"] == 0
    # strict spotting counts are the sums of per-video evaluations
    total = evaluate(gt, pred, mode="strict")["spotting"]
    keys = {r.key for r in gt + pred}
    parts = [evaluate([g for g in gt if g.key == k], [p for p in pred if p.key == k], mode="strict")["spotting"]
             for k in keys]
    assert [total[n] for n in ("tp", "fp", "fn")] == [sum(p[n] for p in parts) for n in ("tp", "fp", "fn")]


@settings(max_examples=200, deadline=None)
@given(interval_lists, interval_lists)
def test_counts_are_consistent(gt, pred):
    s = evaluate(gt, pred, mode="strict")["spotting"]
    assert s["tp"] <= min(len(gt), len(pred))
    assert s["tp"] + s["fn"] == len(gt) and s["tp"] + s["fp"] == len(pred)
    # megc: only GT of subjects with predictions is seen; each is matched at most once, but one
    # prediction may claim several GTs, so TP may exceed the number of predictions.
    m = evaluate(gt, pred, mode="megc")["spotting"]
    seen = [g for g in gt if g.subject in {p.subject for p in pred}]
    assert m["tp"] <= len(seen) and m["tp"] + m["fn"] == len(seen) and m["fp"] <= len(pred)
    for res in (evaluate(gt, pred, mode="strict"), evaluate(gt, pred, mode="megc")):
        values = [res["spotting"]["f1"], res["recognition"]["precision"], res["recognition"]["recall"], res["strs"]]
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in values)
        if not math.isnan(res["strs"]):
            assert res["strs"] == pytest.approx(res["spotting"]["f1"] * res["recognition"]["f1"])


# ----------------------------------------------------------------- reading files


def test_reads_annotation_table_and_megc_layouts():
    gt = read_intervals(FIXTURES / "gt_table.csv")
    pred = read_intervals(FIXTURES / "pred_megc.csv")
    assert len(gt) == 30 and len(pred) == 21
    assert all(isinstance(r.onset, int) and r.onset <= r.offset for r in gt + pred)
    assert {r.emotion for r in gt} == {"negative", "positive", "surprise", "others"}


def test_reads_loose_csv(tmp_path):
    # any case in the header, BOM, extra columns in any order, blank lines, 12.0, negative onset
    path = write(tmp_path, "x.csv", "\ufeffEmotion, Offset ,Score,ONSET,Video,Subject\n\n"
                 "happiness,12.0,0.9,-3,EP01, 7 \n")
    assert read_intervals(path) == [MegcInterval("7", "EP01", -3, 12, "happiness")]
    assert read_intervals(write(tmp_path, "h.csv", HEADER)) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty file, expected a header row"),
        ("1,a,0,9,happiness\n", "row 1: header lacks column(s) subject, video, onset, offset, emotion"),
        ("subject,video,onset,offset\n1,a,0,9\n", "row 1: header lacks column(s) emotion (found: subject, video"),
        (HEADER + "1,a,0,9,x\n1,a,x1,9,x\n", "row 3: onset 'x1' is not an integer frame number"),
        (HEADER + "1,a,0,9.5,x\n", "row 2: offset '9.5' is not an integer frame number"),
        (HEADER + "1,a,9,3,x\n", "row 2: onset 9 is after offset 3"),
        (HEADER + "1,a,0,9\n", "row 2: expected 5 cells like the header, found 4"),
        (HEADER + "1,a,0,9, \n", "row 2: empty emotion"),
        ("subject,video,onset,offset,emotion,emotion\n", "column(s) emotion appear more than once"),
    ],
)
def test_bad_files(tmp_path, content, reason):
    path = write(tmp_path, "bad.csv", content)
    with pytest.raises(EvaluationError) as info:
        read_intervals(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


def test_a_ground_truth_row_given_twice_is_said(tmp_path):
    """A row copied twice counts twice (as the official scorer counts it): one warning says so."""
    gt = rows("s1,v1,10,20,positive\ns1,v1,10,20,positive\ns1,v1,40,50,negative\n")
    pred = rows("s1,v1,10,20,positive\n")
    for mode in ("megc", "strict"):
        result = evaluate(gt, pred, mode=mode)
        assert "1 ground-truth row(s) repeat an earlier row exactly; each copy counts as an interval of its own" in (
            result["warnings"])
    assert not any("repeat" in w for w in evaluate(gt[1:], pred, mode="strict")["warnings"])
    assert read_intervals(write(tmp_path, "gt.csv", HEADER + "1,a,12.0,20,x\n"))[0].onset == 12  # pandas' floats


def test_no_header_hint_and_missing_file(tmp_path):
    with pytest.raises(EvaluationError, match="no header row"):
        read_intervals(write(tmp_path, "nohead.csv", "1,a,0,9,happiness\n"))
    with pytest.raises(EvaluationError, match="missing.csv: file not found"):
        read_intervals(tmp_path / "missing.csv")
    with pytest.raises(EvaluationError, match="is a directory"):
        read_intervals(tmp_path)
    assert issubclass(EvaluationError, ValueError) and EvaluationError in cli.USER_ERRORS


# ----------------------------------------------------------------- command line


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "fgsl.evaluate", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


@pytest.fixture
def worked_files(tmp_path):
    def dump(name: str, items: list[MegcInterval]) -> Path:
        lines = [f"{r.subject},{r.video},{r.onset},{r.offset},{r.emotion}" for r in items]
        return write(tmp_path, name, HEADER + "\n".join(lines) + "\n")

    return dump("gt.csv", WORKED_GT), dump("pred.csv", WORKED_PRED)


def test_cli_json(worked_files):
    gt, pred = worked_files
    done = run_cli("--gt", gt, "--pred", pred, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"megc", "strict"}
    for mode, strs in (("megc", 8 / 21), ("strict", 12 / 35)):
        assert set(out[mode]["spotting"]) == {"tp", "fp", "fn", "precision", "recall", "f1"}
        assert {"precision", "recall", "f1"} <= set(out[mode]["recognition"])
        assert out[mode]["strs"] == pytest.approx(strs)
    assert out["megc"]["spotting"]["tp"] == 4 and out["strict"]["spotting"]["tp"] == 3

    done = run_cli("--gt", gt, "--pred", pred, "--json", "--emotions", "negative,surprise")
    assert json.loads(done.stdout)["megc"]["strs"] == pytest.approx(8 / 9)


def test_cli_json_nan_is_null(tmp_path):
    gt = write(tmp_path, "gt.csv", HEADER + "1,a,0,9,others\n")
    done = run_cli("--gt", gt, "--pred", gt, "--json")
    out = json.loads(done.stdout)
    assert out["megc"]["strs"] is None and out["strict"]["strs"] == 1.0


def test_cli_table(worked_files):
    gt, pred = worked_files
    done = run_cli("--gt", gt, "--pred", pred)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == format_table(evaluate_all(WORKED_GT, WORKED_PRED))
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["megc", "strict"]
    assert next(line for line in lines if line.startswith("STRS")).split() == ["STRS", "0.3810", "0.3429"]
    assert any(line.split()[0] == "others" and "not counted" in line for line in lines if line.strip())


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--pred", "{gt}"), "nothing.csv: file not found"),
        (("--pred", "{bad}"), "bad.csv: row 2: onset 9 is after offset 3"),
        (("--pred", "{gt}", "--emotions", ","), "--emotions needs at least one emotion"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, worked_files, args, reason):
    gt, _ = worked_files
    bad = write(tmp_path, "bad.csv", HEADER + "1,a,9,3,x\n")
    gt_arg = tmp_path / "nothing.csv" if "nothing" in reason else gt
    argv = [a.format(gt=gt, bad=bad) for a in args]
    done = run_cli("--gt", gt_arg, *argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and reason in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_cli_output_on_a_full_disk_is_one_line(worked_files):
    """An OS error (here stdout on a full disk) is the machine's, not a bug: one line, status 2,
    and no second "Exception ignored" report from Python's flush at exit."""
    gt, pred = worked_files
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "fgsl.evaluate", "--gt", str(gt), "--pred", str(pred), "--json"],
                              stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr == "error: No space left on device\n"



def test_a_wrong_subject_column_is_named_as_such():
    """Predictions whose video the ground truth has under another subject (a video's name or
    ``0`` in the subject column) are not "videos absent from the ground truth"."""
    gt = [MegcInterval("s15", "15_0401", 10, 20, "positive")]
    pred = [MegcInterval("15_0401", "15_0401", 10, 20, "positive"), MegcInterval("x", "other", 1, 5, "others")]
    for mode in ("megc", "strict"):
        result = evaluate(gt, pred, mode=mode)
        assert any("video '15_0401' is in the ground truth under subject 's15', not '15_0401'" in w
                   for w in result["warnings"]), result["warnings"]
        assert not any("'other'" in w for w in result["warnings"][1:])



@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
@pytest.mark.parametrize("reader", ["read_intervals", "read_table"])
def test_a_table_that_never_ends_is_one_error_not_a_full_memory(reader):
    """``--pred /dev/zero`` (or a stream that never ends) was read whole: the kernel killed
    the process once the memory was full."""
    from fgsl.data.table import AnnotationError, read_table

    read, error = {"read_intervals": (read_intervals, EvaluationError), "read_table": (read_table, AnnotationError)}[reader]
    with pytest.raises(error, match=r"^/dev/zero: longer than 67,108,864 characters: not an annotation table$"):
        read("/dev/zero")
