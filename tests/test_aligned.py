"""Whole videos read as MediaPipe-aligned face crops (fgsl.data.aligned): real videos, real MediaPipe."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fgsl.config import preset
from fgsl.data import crop_cache
from fgsl.data.aligned import (REACQUIRE_AFTER, aligned_faces, fit_crops, model_frames, read_aligned_crops,
                                tracker_crop_size)
from fgsl.data.frames import VideoError, open_source
from fgsl.data.spec import load_annotated
from fgsl.data.synthetic import write_video
from fgsl.data.table import Annotation, write_table
from fgsl.data.video import read_centre_crops, read_crops, resample_indices
from fgsl.infer import crops_line
from tests.conftest import shared_video

SAMPLE = shared_video("pyfeat_single_face.mp4")


@pytest.fixture(scope="module")
def sample_frames() -> np.ndarray:
    """The sample's 72 BGR frames (640x360)."""
    return np.stack(list(open_source(SAMPLE)))


def off_centre(frames: np.ndarray, path: Path, widen: int = 320) -> Path:
    """The frames on a wider grey canvas, flush right: the face moves 320 px away from the
    canvas's centre, where a centre crop looks for it (lossless, so only the framing differs)."""
    f, h, w, _ = frames.shape
    canvas = np.full((f, h, w + widen, 3), 90, np.uint8)
    canvas[:, :, widen:] = frames
    write_video(path, canvas, 30.0)
    return path


def test_aligned_crops_follow_the_face_where_centre_crops_lose_it(tmp_path, sample_frames):
    """The reason for aligned reading: the face's crops do not depend on where it sits in the frame."""
    moved = off_centre(sample_frames, tmp_path / "moved.avi")
    here, there = read_aligned_crops(SAMPLE, 112), read_aligned_crops(moved, 112)
    assert here.frames.shape == there.frames.shape == (72, 112, 112, 3) and here.frames.dtype == np.uint8
    assert here.fps == there.fps == 30.0
    aligned_gap = np.abs(here.frames.astype(int) - there.frames.astype(int)).mean()
    centre_gap = np.abs(read_centre_crops(SAMPLE, 112).frames.astype(int)
                        - read_centre_crops(moved, 112).frames.astype(int)).mean()
    assert aligned_gap < 4 < 40 < centre_gap, (aligned_gap, centre_gap)  # measured 1.6 and 82
    # read_crops is the one switch between the two readers.
    assert np.array_equal(read_crops(moved, 112, aligned=True).frames, there.frames)
    assert np.array_equal(read_crops(moved, 112).frames, read_centre_crops(moved, 112).frames)


def test_crops_are_made_at_the_live_size_and_shrunk_like_the_live_spotters():
    """The tracker crops at least 128 px and shrinks to the model's size with INTER_AREA, as
    realtime.spotters.fgsl.model_crops does live (it calls the same fit_crops)."""
    assert tracker_crop_size(32) == tracker_crop_size(112) == 128 and tracker_crop_size(160) == 160
    faces = [f[0].crop for f in aligned_faces(open_source(SAMPLE), 128)]
    assert np.array_equal(read_aligned_crops(SAMPLE, 32).frames, fit_crops(np.stack(faces), 32))
    big = np.zeros((2, 16, 16, 3), np.uint8)
    assert fit_crops(big, 16) is big and fit_crops(big, 32).shape == (2, 32, 32, 3)


def test_frames_without_the_face_repeat_the_one_before_with_a_warning(tmp_path, sample_frames):
    frames = sample_frames.copy()
    frames[:3] = frames[30:40] = 128  # plain grey: the face is gone, at the start and for ten frames
    write_video(tmp_path / "gap.avi", frames, 30.0)
    with pytest.warns(UserWarning, match=r"gap\.avi: the face is not found in 13 of the 72 frames read; each repeats the "
                                         r"aligned frame before it"):
        video = read_aligned_crops(tmp_path / "gap.avi", 64)
    assert all(np.array_equal(video.frames[i], video.frames[3]) for i in range(3))  # the first one found
    assert all(np.array_equal(video.frames[i], video.frames[29]) for i in range(30, 40))
    assert not np.array_equal(video.frames[40], video.frames[29])


def test_a_face_that_reappears_elsewhere_is_followed_again(tmp_path, sample_frames):
    """The subject moves 320 px at frame 36 (the tracker starts a new track far away): after
    REACQUIRE_AFTER frames the largest face in view is followed again, not frozen for good."""
    f, h, w, _ = sample_frames.shape
    canvas = np.full((f, h, w + 320, 3), 90, np.uint8)
    canvas[:36, :, 320:], canvas[36:, :, :w] = sample_frames[:36], sample_frames[36:]
    write_video(tmp_path / "jump.avi", canvas, 30.0)
    with pytest.warns(UserWarning, match=rf"the face is not found in {REACQUIRE_AFTER} of the 72 frames read"):
        video = read_aligned_crops(tmp_path / "jump.avi", 112)
    gap = range(36, 36 + REACQUIRE_AFTER)
    assert all(np.array_equal(video.frames[i], video.frames[35]) for i in gap)
    # From then on the crops are the face again, as in the unmoved video (measured 0.8-2.3 grey levels apart).
    steady = read_aligned_crops(SAMPLE, 112).frames[gap.stop:].astype(int)
    assert np.abs(video.frames[gap.stop:].astype(int) - steady).mean(axis=(1, 2, 3)).max() < 4


@pytest.mark.parametrize("source_fps, model_fps", [(200, 30), (60, 30), (31, 30), (30, 30), (25, 30), (30, None)])
def test_only_the_frames_the_model_is_shown_are_tracked(source_fps, model_fps):
    """model_frames picks the source frames resample_indices shows the model; not knowing
    where the video ends, it may also pick the last frame, which a model frame just past the
    end would show."""
    count = 1000
    shown = [i for i, keep in zip(range(count), model_frames(source_fps, model_fps)) if keep]
    expected = sorted(set(resample_indices(count, source_fps, model_fps or source_fps)))
    assert shown[:len(expected)] == expected and shown[len(expected):] in ([], [count - 1])
    assert len(shown) == (count if model_fps is None or model_fps >= source_fps else
                          pytest.approx(count * model_fps / source_fps, abs=1))


def test_a_fast_video_is_tracked_at_the_models_rate(tmp_path, sample_frames):
    """The sample taken as a 60 fps video read for a 30 fps model: every other frame is
    tracked (the gap warning counts 36 frames read), the others repeat the one before, and the
    tracked ones are the face as when every frame is tracked."""
    frames = sample_frames.copy()
    frames[30:40] = 128  # ten source frames without the face: five of those read
    write_video(tmp_path / "gap.avi", frames, 60.0)
    with pytest.warns(UserWarning, match=r"the face is not found in 5 of the 36 frames read"):
        video = read_aligned_crops(tmp_path / "gap.avi", 64, model_fps=30)
    assert video.frames.shape == (72, 64, 64, 3) and video.fps == 60.0
    assert all(np.array_equal(video.frames[i + 1], video.frames[i]) for i in range(0, 72, 2))
    with pytest.warns(UserWarning, match=r"not found in 10 of the 72 frames read"):
        every = read_aligned_crops(tmp_path / "gap.avi", 64)
    keep = [i for i in range(0, 72, 2) if not 30 <= i < 40]
    assert np.abs(video.frames[keep].astype(int) - every.frames[keep].astype(int)).mean() < 4


def test_clips_of_an_aligned_synthetic_set_are_read_as_they_are(tmp_path, monkeypatch):
    """A set made with --align holds aligned crops already: asked for aligned crops, its clips
    are read as training on the set read them, not aligned a second time; the same clip in a
    set made without --align (or in an unfinished one) is aligned."""
    clip = np.ascontiguousarray(read_aligned_crops(SAMPLE, 128).frames[:24, :, :, ::-1])  # BGR for the writer
    for name, recipe in (("aligned", {"align": True}), ("plain", {"align": False}), ("unfinished", None)):
        write_video(tmp_path / name / "videos" / "clip.avi", clip, 30.0)
        (tmp_path / name / "synthetic.json").write_text(json.dumps({"recipe": recipe}))
    as_is = read_centre_crops(tmp_path / "aligned" / "videos" / "clip.avi", 32).frames
    assert np.array_equal(read_crops(tmp_path / "aligned" / "videos" / "clip.avi", 32, aligned=True).frames, as_is)
    # However it is named: from inside its folder, through a link.
    (tmp_path / "link.avi").symlink_to(tmp_path / "aligned" / "videos" / "clip.avi")
    assert np.array_equal(read_crops(tmp_path / "link.avi", 32, aligned=True).frames, as_is)
    monkeypatch.chdir(tmp_path / "aligned" / "videos")
    assert np.array_equal(read_crops("clip.avi", 32, aligned=True).frames, as_is)
    for name in ("plain", "unfinished"):
        again = read_crops(tmp_path / name / "videos" / "clip.avi", 32, aligned=True).frames
        assert np.abs(again.astype(int) - as_is).mean() > 1, name  # moved by the second alignment
    # The start-up line of fgsl.infer / fgsl.tune says so, rather than that they are aligned and cached.
    aligned_clip, plain_clip = tmp_path / "aligned" / "videos" / "clip.avi", tmp_path / "plain" / "videos" / "clip.avi"
    assert crops_line(True, None, [aligned_clip]) == ("faces aligned already (clips of an aligned synthetic set, "
                                                      "read as they are)")
    assert crops_line(True, None, [aligned_clip, plain_clip]) == (
        f"faces aligned with MediaPipe, cached in {crop_cache.default_dir()}; 1 clip(s) of an aligned synthetic set "
        "read as they are")
    assert crops_line(False, None, [aligned_clip]) == "centre crops"


def test_a_video_without_a_face_is_one_clear_error(tmp_path):
    write_video(tmp_path / "empty.avi", np.full((12, 240, 320, 3), 100, np.uint8), 30.0)
    with pytest.raises(VideoError, match=r"empty\.avi: MediaPipe found no face to align in the 12 frames read"):
        read_aligned_crops(tmp_path / "empty.avi", 64)


def test_a_two_face_video_follows_the_larger_face_throughout_and_says_so():
    """One subject per video offline: the face that is largest at the start, in every frame
    (never the other face's crop), with a warning that realtime.cam spots each."""
    path = shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4")
    with pytest.warns(UserWarning, match=r"up to 2 faces in view; reading the largest at the start"):
        video = read_aligned_crops(path, 64)
    per_frame = [sorted(faces, key=lambda f: f.box[0]) for faces in aligned_faces(open_source(path), 128)]
    assert all(len(faces) == 2 for faces in per_frame)
    first = per_frame[0]
    area = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in first]
    side = int(np.argmax(area))  # 0: the left face, 1: the right one
    for i, faces in enumerate(per_frame):
        assert np.array_equal(video.frames[i], fit_crops(faces[side].crop[None], 64)[0]), i
        assert not np.array_equal(video.frames[i], fit_crops(faces[1 - side].crop[None], 64)[0]), i


def test_annotated_training_videos_can_be_read_aligned(tmp_path, sample_frames):
    """fgsl.train --align-faces on annotated data: each video's frames are its aligned face."""
    cfg = preset("tiny")
    for subject in ("a", "b"):  # (a split needs two subjects; b is held out)
        (tmp_path / subject).mkdir()
        off_centre(sample_frames, tmp_path / subject / "face.avi")
    rows = [Annotation("a", "face", 10, 12, 16, "micro", "positive"), Annotation("b", "face", 30, 31, 33, "micro", "surprise")]
    write_table(rows, tmp_path / "gt.csv")
    aligned = load_annotated(cfg, "table", tmp_path / "gt.csv", tmp_path, "subjects:b", val="none", aligned=True)
    centre = load_annotated(cfg, "table", tmp_path / "gt.csv", tmp_path, "subjects:b", val="none")
    assert "faces aligned as the live spotter aligns them" in aligned.description
    assert "aligned" not in centre.description
    (item,) = aligned.train
    assert item.frames.shape == (72, 32, 32, 3) and item.events == centre.train[0].events
    assert np.array_equal(item.frames, read_aligned_crops(tmp_path / "a" / "face.avi", 32).frames)
    assert not np.array_equal(item.frames, centre.train[0].frames)


def _intervals(csv_path: Path) -> dict[str, set[tuple[str, str, str]]]:
    """Each video's rows of a MEGC CSV as a set of (onset, offset, emotion)."""
    rows: dict[str, set[tuple[str, str, str]]] = {}
    for subject, video, onset, offset, emotion in list(csv.reader(csv_path.open()))[1:]:
        rows.setdefault(video, set()).add((onset, offset, emotion))
    return rows


def test_infer_reads_videos_as_the_weights_were_trained(tmp_path, sample_frames, capsys):
    """Weights marked ``"crops": "aligned"`` (fgsl.train --align-faces) are fed aligned face
    crops by default: the same face gives the same intervals wherever it sits in the frame.
    ``--no-align-faces`` feeds centre crops and says that the weights learned other crops."""
    from fgsl import weights
    from fgsl.infer import main as infer_main
    from fgsl.model import build

    run = weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True, info={"crops": "aligned"})
    moved = off_centre(sample_frames, tmp_path / "moved.avi")
    common = ["--weights", str(run), "--backend", "torch", "--engine-device", "cpu", "--quiet", "--threshold", "0",
              "--videos", str(SAMPLE), str(moved)]
    assert infer_main([*common, "--out", str(tmp_path / "aligned.csv")]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0].endswith(f"), faces aligned with MediaPipe, cached in {crop_cache.default_dir()}"), err
    found = _intervals(tmp_path / "aligned.csv")
    assert found["moved"] == found["pyfeat_single_face"] and len(found["moved"]) >= 5

    assert infer_main([*common, "--out", str(tmp_path / "centre.csv"), "--no-align-faces"]) == 0
    err = capsys.readouterr().err
    assert ("centre crops (the weights were trained on aligned crops: expect lower accuracy)" in err), err
    found = _intervals(tmp_path / "centre.csv")
    assert found["moved"] != found["pyfeat_single_face"]


def test_infer_keeps_centre_crops_for_other_weights_and_aligns_on_request(tmp_path, capsys):
    from fgsl import weights
    from fgsl.infer import main as infer_main
    from fgsl.model import build

    # Weights saved before "crops" was recorded (or from elsewhere) keep the centre crops they always had.
    unknown = weights.save(build(preset("tiny"), seed=0), tmp_path / "old", trained=True)
    assert infer_main(["--weights", str(unknown), "--backend", "torch", "--engine-device", "cpu", "--quiet",
                       "--videos", str(SAMPLE), "--out", str(tmp_path / "old.csv")]) == 0
    assert capsys.readouterr().err.splitlines()[0].endswith("), centre crops")
    run = weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True, info={"crops": "centre"})
    common = ["--weights", str(run), "--backend", "torch", "--engine-device", "cpu", "--quiet", "--videos", str(SAMPLE)]
    assert infer_main([*common, "--out", str(tmp_path / "a.csv")]) == 0
    assert capsys.readouterr().err.splitlines()[0].endswith("), centre crops")
    assert infer_main([*common, "--out", str(tmp_path / "b.csv"), "--align-faces"]) == 0
    assert (f"faces aligned with MediaPipe, cached in {crop_cache.default_dir()} (the weights were trained on centre "
            "crops: expect lower accuracy)" in capsys.readouterr().err)
    # A video with no face to align: one error line, no CSV.
    write_video(tmp_path / "empty.avi", np.full((12, 240, 320, 3), 100, np.uint8), 30.0)
    assert infer_main([*common[:-1], str(tmp_path / "empty.avi"), "--out", str(tmp_path / "c.csv"),
                       "--align-faces"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"error: {tmp_path / 'empty.avi'}: MediaPipe found no face to align in the 12 frames read"
    assert not (tmp_path / "c.csv").exists()


def test_an_engine_folder_of_aligned_weights_is_read_aligned(tmp_path, capsys):
    """engines.build copies the weights' "crops" into its manifest; fgsl.infer follows it."""
    from engines.export import export_engine_dir
    from fgsl import weights
    from fgsl.infer import main as infer_main
    from fgsl.model import build

    run = weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True, info={"crops": "aligned"})
    export_engine_dir(run, tmp_path / "engine")
    assert infer_main(["--weights", str(tmp_path / "engine"), "--backend", "onnxruntime", "--engine-device", "cpu",
                       "--quiet", "--videos", str(SAMPLE), "--out", str(tmp_path / "p.csv")]) == 0
    assert capsys.readouterr().err.splitlines()[0].endswith(f"), faces aligned with MediaPipe, cached in "
                                                            f"{crop_cache.default_dir()}")


@pytest.mark.parametrize("command", ["fgsl.infer", "fgsl.tune"])
def test_aligned_reading_without_mediapipe_is_one_error_line(tmp_path, command):
    """MediaPipe cannot start (not installed, or no libEGL on a headless server): one line, as in realtime.cam."""
    from fgsl import weights
    from fgsl.model import build

    run = weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True, info={"crops": "aligned"})
    gt = tmp_path / "gt.csv"
    gt.write_text("subject,video,onset,offset,emotion\ns1,pyfeat_single_face,10,15,positive\n")
    extra = ["--out", str(tmp_path / "p.csv")] if command == "fgsl.infer" else ["--gt", str(gt)]
    script = (f"import sys; sys.modules['mediapipe'] = None\nfrom {command} import main\n"
              "raise SystemExit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "--weights", str(run), "--backend", "torch", "--quiet",
                           "--videos", str(SAMPLE), *extra], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: face tracking needs mediapipe"), done.stderr


@pytest.mark.slow
def test_training_on_annotated_videos_aligned_records_it_and_resumes_only_so(tmp_path, sample_frames):
    """fgsl.train --align-faces on annotated data: the weights say "aligned" (so fgsl.infer and
    the live spotter read them right), and --resume goes on only with the same crops."""
    from fgsl import weights

    for subject in ("a", "b"):
        (tmp_path / "videos" / subject).mkdir(parents=True)
        off_centre(sample_frames, tmp_path / "videos" / subject / "face.avi")
    write_table([Annotation("a", "face", 10, 12, 16, "micro", "positive"),
                 Annotation("b", "face", 30, 31, 33, "micro", "surprise")], tmp_path / "gt.csv")

    def train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fgsl.train", "--preset", "tiny", "--data",
                               f"table={tmp_path / 'gt.csv'}", "--video-root", str(tmp_path / "videos"), "--split",
                               "subjects:b", "--val", "none", "--batch", "2", "--quiet", "--out", str(tmp_path / "run"),
                               *extra], capture_output=True, text=True, timeout=600)

    first = train("--align-faces", "--epochs", "1")
    assert first.returncode == 0, first.stderr
    info = weights.info(tmp_path / "run")
    assert info["crops"] == "aligned" and "faces aligned as the live spotter aligns them" in info["data"]
    cached = {p: p.stat().st_ino for p in crop_cache.default_dir().glob(f"*{crop_cache.SUFFIX}")}
    assert len(cached) == 2  # one entry per video
    refused = train("--epochs", "2", "--resume")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "error: --resume: the run was trained on other data (crops 'aligned' -> 'centre'): the crops its weights "
        "learned would change; resume with the run's own data flags")
    again = train("--align-faces", "--epochs", "2", "--resume")
    assert again.returncode == 0, again.stderr
    # The resumed run read the entries: nothing was aligned (and written, as a new file) again.
    assert {p: p.stat().st_ino for p in crop_cache.default_dir().glob(f"*{crop_cache.SUFFIX}")} == cached
    assert weights.info(tmp_path / "run")["crops"] == "aligned"
