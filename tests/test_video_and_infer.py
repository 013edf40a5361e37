"""Offline inference on real face videos, and clear errors for bad files."""

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fgsl.config import preset
from fgsl.data.video import (VideoError, nearest_frame, normalise, pad_frames, read_centre_crops, resample_indices,
                             to_model_frame, to_source_frame)
from fgsl.decode import Interval
from fgsl.evaluate import MEGC_COLUMNS, read_intervals
from fgsl.infer import Detection, to_detections, window_starts, write_csv
from tests.conftest import SAMPLE_VIDEO, shared_video


def test_reads_real_videos_as_centre_crops():
    video = read_centre_crops(shared_video("pyfeat_single_face.mp4"), 112)
    assert video.count == 72 and video.fps == pytest.approx(30.0)
    assert video.frames.shape == (72, 112, 112, 3) and video.frames.dtype == np.uint8
    assert video.frames.std() > 10  # real image content, not a blank frame
    portrait = read_centre_crops(shared_video("liveportrait_d13_talking_portrait.mp4"), 64)
    assert portrait.frames.shape[1:] == (64, 64, 3)


def test_bundled_sample_is_the_shared_video():
    assert SAMPLE_VIDEO.read_bytes() == shared_video("pyfeat_single_face.mp4").read_bytes()


def test_corrupt_and_missing_videos_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoError, match="broken.mp4"):
        read_centre_crops(bad, 32)
    with pytest.raises(VideoError, match="no such video file"):
        read_centre_crops(tmp_path / "none.mp4", 32)


def test_resampling_and_window_layout():
    assert resample_indices(10, 30, 30).tolist() == list(range(10))
    assert resample_indices(200, 200, 30)[:4].tolist() == [0, 7, 13, 20]  # SAMM 200 fps -> 30: round(20i/3)
    # Model frame i (at i/30 s) takes the nearest source frame, for every i/30 s within the source
    # (4 frames at 10 fps: 0 to 0.3 s, so i = 0..9). Nearest to i/30 s at 10 fps is round(i/3),
    # never a tie (i/3 is never x.5), so no rounding rule for ties is assumed here.
    assert resample_indices(4, 10, 30).tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert window_starts(64, 64) == [0]
    assert window_starts(100, 64) == [0, 16, 32, 36]
    assert window_starts(10, 64) == [0]


def test_one_frame_mapping_rounds_ties_half_up():
    """docs/datasets.md's rule. Python's round and np.round go half to even: SAMM frame 30
    (4.5 model frames) became model frame 4 in training targets while frame 10 (1.5) became 2."""
    assert [nearest_frame(x) for x in (0.0, 0.5, 1.5, 2.5, 4.5, 4.49, 7.5)] == [0, 1, 2, 3, 5, 4, 8]
    assert [to_model_frame(f, 200, 30) for f in (0, 6, 7, 10, 30, 50, 70, 200)] == [0, 1, 1, 2, 5, 8, 11, 30]
    assert to_model_frame(45, 30, 30) == 45
    assert (to_model_frame(3561, 200, 30), to_model_frame(3587, 200, 30), to_model_frame(3631, 200, 30)) == (534, 538, 545)
    # Back to source frames, fractional model frames included (decoded intervals are).
    assert to_source_frame(2, 200, 30) == 13  # 13.33
    assert [to_source_frame(m, 30, 30) for m in (2.5, 3.5, 6.5, 4.49)] == [3, 4, 7, 4]
    assert [to_source_frame(m, 15, 30) for m in (1, 3, 5)] == [1, 2, 3]  # 0.5, 1.5, 2.5 up
    # Where the model's rate is not above the source's, every model frame survives the round trip.
    for source_fps in (200, 60, 50, 30, 29.97):
        assert all(to_model_frame(to_source_frame(m, source_fps, 30), source_fps, 30) == m for m in range(400))
    with pytest.raises(ValueError, match="source_fps must be a positive frame rate"):
        to_model_frame(3, 0, 30)
    with pytest.raises(ValueError, match="frame -1 is negative"):
        to_model_frame(-1, 30, 30)


def test_resampled_frames_follow_the_same_mapping():
    """The frame the model sees as model frame i is to_source_frame(i): a 15 fps video at 30 fps
    shows each source frame twice, evenly (np.round gave 0, 0, 1, 2, 2, 2, 3, 4, 4, 4, ...)."""
    assert resample_indices(8, 15, 30).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    samm = resample_indices(2000, 200, 30)
    assert samm.tolist() == [to_source_frame(i, 200, 30) for i in range(len(samm))]
    assert [to_model_frame(f, 200, 30) for f in samm] == list(range(len(samm)))


def test_detections_go_back_to_source_frames_by_the_same_rule():
    cfg = preset("tiny")  # 30 fps
    ties = to_detections([Interval(2.5, 4.5, 6.5, 0, 0.9)], cfg, "v.mp4", 30.0, 100)
    assert ties == [Detection("v.mp4", 3, 5, 7, cfg.classes[0], 0.9)]  # round() gave 2, 4, 6
    samm = to_detections([Interval(1.5, 4.5, 7.5, 1, 0.5)], cfg, "v", 200.0, 40)[0]
    assert (samm.onset, samm.apex, samm.offset) == (10, 30, 39)  # 50 is past the video's last frame


def test_short_clips_are_padded_with_their_last_frame():
    frames = np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((3, 2, 2, 3), np.uint8)
    assert pad_frames(frames, 5)[:, 0, 0, 0].tolist() == [0, 1, 2, 2, 2]
    assert pad_frames(frames, 3) is frames and pad_frames(frames, 2) is frames


def test_the_megc_csv_has_the_columns_the_scorer_reads(tmp_path):
    out = tmp_path / "pred.csv"
    write_csv([Detection("a/v1.mp4", 3, 5, 7, "surprise", 0.9)], out, {"a/v1.mp4": ("s1", "v1")})
    assert next(csv.reader(out.open())) == list(MEGC_COLUMNS)
    assert [(r.subject, r.video, r.onset, r.offset, r.emotion) for r in read_intervals(out)] == [
        ("s1", "v1", 3, 7, "surprise")]


def test_infer_batch_must_be_a_positive_whole_number(capsys):
    from fgsl.infer import main as infer_main

    for value, words in (("0", "must be at least 1, got '0'"), ("2.5", "must be a whole number, got '2.5'")):
        with pytest.raises(SystemExit) as info:
            infer_main(["--preset", "tiny", "--allow-untrained", "--videos", str(SAMPLE_VIDEO), "--batch", value])
        assert info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: argument --batch: {words}")


@pytest.mark.parametrize("value", [" ", ""])
def test_a_blank_subject_is_refused_as_fgsl_evaluate_would_refuse_its_rows(capsys, value):
    from fgsl.infer import main as infer_main

    with pytest.raises(SystemExit) as info:
        infer_main(["--preset", "tiny", "--allow-untrained", "--videos", str(SAMPLE_VIDEO), "--subject", value])
    assert info.value.code == 2
    reason = f"must name a subject, got {value!r}" if value else "empty value (an unset shell variable?)"
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: argument --subject: {reason}")


def test_normalise_uses_imagenet_statistics():
    frames = np.full((2, 4, 4, 3), 255, np.uint8)
    x = normalise(frames)
    assert x.shape == (3, 2, 4, 4)
    assert x[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-6)


def _infer(*args):
    return subprocess.run([sys.executable, "-m", "fgsl.infer", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_infer_cli_on_real_videos_writes_a_megc_csv(tmp_path):
    out = tmp_path / "pred.csv"
    run = _infer("--preset", "realtime", "--allow-untrained", "--quiet", "--threshold", "0",
                 "--videos", str(shared_video("pyfeat_single_face.mp4")),
                 str(shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4")), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "UNTRAINED WEIGHTS" in run.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["subject", "video", "onset", "offset", "emotion"]
    videos = {r[1] for r in rows[1:]}
    assert videos == {"pyfeat_single_face", "liveportrait_d18_d19_two_faces_sidebyside"}
    for subject, video, onset, offset, emotion in rows[1:]:
        assert subject == video  # no --subject, no --subjects-from: the video's name, as realtime.cam --csv
        last = 71 if video == "pyfeat_single_face" else 215
        assert 0 <= int(onset) <= int(offset) <= last
        assert emotion in {"negative", "positive", "surprise", "others"}


def test_infer_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"garbage")
    for args, words in [
        (["--videos", str(SAMPLE_VIDEO)], "give --weights RUN_DIR"),
        (["--preset", "tiny", "--allow-untrained", "--videos", str(bad)], "x.mp4: OpenCV cannot open"),
        (["--weights", str(tmp_path), "--videos", str(SAMPLE_VIDEO)], "not a weights folder"),
    ]:
        run = _infer(*args)
        assert run.returncode == 2
        lines = run.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and words in lines[-1]
        assert "Traceback" not in run.stderr


def test_model_summary_cli_prints_the_table():
    run = subprocess.run([sys.executable, "-m", "fgsl.model", "--preset", "realtime"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "parameters trainable" in text and "[None, 3, 64, 112, 112]" in text
    enc = next(line for line in text.splitlines() if line.startswith("GMACs per 16-frame chunk"))
    assert 9.0 < float(enc.split()[4]) < 11.0  # DESIGN: about 10 GMAC per ViT-S 112² chunk
    assert "RuntimeWarning" not in run.stderr


def test_merge_reports_each_movement_once_with_its_best_class():
    from fgsl.decode import Interval
    from fgsl.infer import merge

    same_movement = [Interval(10, 12, 16, 0, 0.9), Interval(11, 12, 17, 2, 0.7), Interval(9, 12, 15, 0, 0.6)]
    other = [Interval(40, 42, 45, 1, 0.5), Interval(60, 61, 62, 3, 0.1)]
    kept = merge(same_movement + other, threshold=0.3)
    assert kept == [Interval(10, 12, 16, 0, 0.9), Interval(40, 42, 45, 1, 0.5)]
    assert merge([], threshold=0.3) == []
    fragment = Interval(20, 21, 23, 2, 0.8)  # 4 frames after the first movement ends
    assert merge(same_movement + [fragment], threshold=0.3) == [same_movement[0], fragment]
    assert merge(same_movement + [fragment], threshold=0.3, gap=8) == [same_movement[0]]


@pytest.fixture(scope="module")
def untrained_engine_dir(tmp_path_factory):
    """An engine folder of random tiny weights, as ``engines.build --allow-untrained`` writes it."""
    from engines.export import export_engine_dir
    from fgsl.config import preset
    from fgsl.model import build

    out = tmp_path_factory.mktemp("engine") / "tiny"
    export_engine_dir(build(preset("tiny"), seed=0), out, trained=False)
    return out


def test_infer_runs_an_engine_folder_whose_manifest_says_untrained(untrained_engine_dir, tmp_path, capsys):
    """An engine folder has no model.safetensors: whether it is trained comes from its manifest."""
    from fgsl.infer import main as infer_main

    out = tmp_path / "pred.csv"
    args = ["--weights", str(untrained_engine_dir), "--backend", "onnxruntime", "--engine-device", "cpu", "--quiet",
            "--videos", str(SAMPLE_VIDEO), "--out", str(out)]
    assert infer_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {untrained_engine_dir}: this engine was built from untrained (random) weights; its "
                   "outputs mean nothing. Pass --allow-untrained for benchmarks"]
    assert infer_main([*args, "--allow-untrained"]) == 0
    err = capsys.readouterr().err
    assert "UNTRAINED WEIGHTS" in err and "model.safetensors" not in err
    assert next(csv.reader(out.open())) == ["subject", "video", "onset", "offset", "emotion"]


def test_the_shared_open_path_reads_trained_from_the_manifest(untrained_engine_dir):
    """``fgsl.infer.open_engine`` is also how the live FGSL spotter (realtime.cam) opens --weights."""
    import argparse

    import engines
    from fgsl.infer import open_engine
    from realtime.spotters.fgsl import FGSLSpotter

    engine, trained = open_engine(untrained_engine_dir, allow_untrained=True, backend="onnxruntime", device="cpu")
    ns = argparse.Namespace(weights=str(untrained_engine_dir), allow_untrained=True, preset=None,
                            backend="onnxruntime", engine_device="cpu")
    assert trained is False and engines.trained(untrained_engine_dir) is False
    assert engine.cfg.name == "tiny"
    assert FGSLSpotter.from_args(ns).trained is False


def test_infer_refuses_bad_thresholds_and_a_folder_as_out_before_any_work(tmp_path, capsys):
    from fgsl.infer import main as infer_main

    for value in ("nan", "-1", "5", "1", "inf"):
        with pytest.raises(SystemExit) as info:
            infer_main(["--preset", "tiny", "--allow-untrained", "--videos", str(SAMPLE_VIDEO), "--threshold", value])
        assert info.value.code == 2
        assert f"argument --threshold: must be a score in [0, 1), got '{value}'" in capsys.readouterr().err
    # The missing video would fail first if --out were only checked when the CSV is written.
    assert infer_main(["--preset", "tiny", "--allow-untrained", "--videos", str(tmp_path / "none.mp4"),
                       "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: --out {tmp_path}: cannot write here (it is a folder)"]
    assert infer_main(["--weights", str(tmp_path), "--preset", "tiny", "--videos", str(SAMPLE_VIDEO)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --preset is for --allow-untrained without --weights: a weights folder's config.json sets its preset"]
    # An --out that is one of the videos would replace it with the CSV.
    copy = tmp_path / "clip.mp4"
    copy.write_bytes(SAMPLE_VIDEO.read_bytes())
    assert infer_main(["--preset", "tiny", "--allow-untrained", "--videos", str(copy), "--out", str(copy)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --out {copy} would overwrite --videos {copy}; write it elsewhere"]
    assert copy.read_bytes() == SAMPLE_VIDEO.read_bytes()


def test_infer_and_tune_help_list_the_backends(capsys):
    from fgsl.infer import main as infer_main
    from fgsl.tune import main as tune_main

    for main in (infer_main, tune_main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--backend {auto,torch,onnxruntime,tensorrt}" in text and "(default: auto)" in text
    with pytest.raises(SystemExit) as info:
        infer_main(["--backend", "bogus", "--videos", "x.mp4"])
    assert info.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err



def test_infer_reads_a_folder_of_frames_with_fps(tmp_path, capsys):
    """The data sets ship frame folders (CAS(ME)^2 rawpic, SAMM); their rate comes from --fps."""
    import cv2

    from fgsl.infer import main as infer_main

    frames = tmp_path / "clip"
    frames.mkdir()
    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    for n in range(1, 41):
        ok, image = cap.read()
        assert ok
        cv2.imwrite(str(frames / f"img{n}.jpg"), image)
    cap.release()
    base = ["--preset", "tiny", "--allow-untrained", "--quiet", "--threshold", "0", "--videos", str(frames)]
    assert infer_main([*base, "--out", str(tmp_path / "a.csv")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: {frames}: a folder of frames has no frame rate of its own; pass it with --fps")
    assert infer_main([*base, "--fps", "30", "--out", str(tmp_path / "b.csv")]) == 0
    rows = list(csv.reader((tmp_path / "b.csv").open()))[1:]
    assert rows and all(r[1] == "clip" and 0 <= int(r[2]) <= int(r[3]) <= 39 for r in rows)


def test_table_names_follow_the_data_sets_layouts(tmp_path):
    """Output rows must carry the ground truth's (subject, video) to be scored: CAS(ME)^2's
    rawpic folders add the stimulus word, CAS(ME)^3's frames sit in <subject>/<video>/color,
    and its video letters repeat across subjects."""
    from fgsl.cli import UsageError
    from fgsl.infer import say_unmatched, table_names

    truth = [("s15", "15_0401"), ("s15", "15_04012"), ("spNO.1", "a"), ("spNO.2", "a"), ("x", "clip")]
    casme2 = str(tmp_path / "rawpic" / "s15" / "15_0401girlcrashing")
    casme3 = str(tmp_path / "part_A" / "spNO.2" / "a" / "color")
    names = table_names([casme2, casme3, "/v/clip.mp4", "/v/other.mp4"], truth, subject="S")
    assert names == {casme2: ("s15", "15_0401"), casme3: ("spNO.2", "a"), "/v/clip.mp4": ("x", "clip"),
                     "/v/other.mp4": ("S", "other")}
    with pytest.warns(UserWarning) as said:  # a video the ground truth lacks could never be scored: said
        say_unmatched(names, truth)
    assert [str(w.message) for w in said] == ["/v/other.mp4: no video 'other' in the ground truth; its rows are "
                                              "named subject 'S', video 'other', which fgsl.evaluate cannot match "
                                              "with it"]
    alone = table_names(["/v/other.mp4"], [])
    assert alone["/v/other.mp4"] == ("other", "other")  # as realtime.cam --csv
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        say_unmatched(alone, [])  # no ground truth: nothing to say
    assert table_names(["/v/clip_v2.mp4"], truth)["/v/clip_v2.mp4"] == ("clip_v2", "clip_v2")  # not "clip" + "_v2"
    with pytest.raises(UsageError, match=r"video 'a' under 2 subjects \(spNO.1, spNO.2\) and none is in the path"):
        table_names([str(tmp_path / "flat" / "a" / "color")], truth)


def test_infer_checks_every_input_before_the_long_part(untrained_engine_dir, tmp_path, capsys):
    """Found by the bad-input audit: each of these cost the work of every video before it, or
    destroyed the model, or gave rows that cannot be told apart."""
    import os

    from fgsl.infer import main as infer_main

    def refused(*argv: str) -> str:
        assert infer_main(["--weights", str(untrained_engine_dir), "--allow-untrained", *argv]) == 2
        err = capsys.readouterr().err
        assert "FGSL tiny on" not in err  # refused before the engine opened, let alone ran
        return err.strip().splitlines()[-1]

    manifest = untrained_engine_dir / "manifest.json"
    before = manifest.read_bytes()
    assert refused("--videos", str(SAMPLE_VIDEO), "--out", str(manifest)) == (
        f"error: --out {manifest} would overwrite --weights {manifest}; write it elsewhere")
    assert manifest.read_bytes() == before
    unreadable = tmp_path / "zero.mp4"
    unreadable.write_bytes(b"")
    assert "zero.mp4: an empty file (0 bytes)" in refused("--videos", str(SAMPLE_VIDEO), str(unreadable),
                                                        "--out", str(tmp_path / "p.csv"))
    assert refused("--videos", str(SAMPLE_VIDEO), str(SAMPLE_VIDEO), "--out", str(tmp_path / "p.csv")) == (
        f"error: video {SAMPLE_VIDEO} is given twice: its intervals would be listed twice in the CSV; give it once")
    link = tmp_path / "other_name.mp4"  # one file under two names: two rows of one video's intervals
    link.symlink_to(SAMPLE_VIDEO)
    assert refused("--videos", str(SAMPLE_VIDEO), str(link), "--out", str(tmp_path / "p.csv")) == (
        f"error: videos {SAMPLE_VIDEO} and {link} are one file: its intervals would be listed twice in the CSV; "
        "give it once")
    for folder in ("a", "b"):
        os.makedirs(tmp_path / folder)
        (tmp_path / folder / "x.mp4").write_bytes(SAMPLE_VIDEO.read_bytes())
    assert refused("--videos", str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "x.mp4"),
                   "--out", str(tmp_path / "p.csv")).startswith(
        f"error: --videos {tmp_path / 'a' / 'x.mp4'} and {tmp_path / 'b' / 'x.mp4'} would both be subject 'x', "
        "video 'x' in the CSV")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_infer_writes_the_csv_when_the_console_fails(untrained_engine_dir, tmp_path):
    """A log on a full disk (stdout failing) lost the CSV: the interval lines come first."""
    out = tmp_path / "pred.csv"
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "fgsl.infer", "--weights", str(untrained_engine_dir),
                              "--allow-untrained", "--threshold", "0", "--quiet", "--videos", str(SAMPLE_VIDEO),
                              "--out", str(out)], stdout=full, stderr=subprocess.PIPE, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "error: No space left on device"
    assert len(read_intervals(out)) > 0  # threshold 0: random weights report something
