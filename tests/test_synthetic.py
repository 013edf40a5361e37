"""Synthetic micro-expressions on real faces: ground truth, motion where it says, clear errors."""

import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from fgsl.cli import UsageError
from fgsl.config import ConfigError
from fgsl.data.synthetic import (
    CLASSES,
    MAX_REPEATS,
    Recipe,
    crop_coordinates,
    displacement_field,
    face_sources,
    find_faces,
    head_sway,
    make_set,
    part_frames,
    ping_pong,
    read_face_frames,
    place_events,
    temporal_profile,
    warp,
)
from fgsl.data.table import read_table
from fgsl.data.video import read_centre_crops
from tests.conftest import disk_full_when_replacing, shared_video


def test_faces_are_found_left_to_right_in_the_two_face_video():
    boxes = find_faces(shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4"))
    assert len(boxes) == 2
    (x0, _, s0), (x1, _, s1) = boxes
    assert x0 + s0 / 2 < 480 < x1 + s1 / 2  # one face per half of the 960 px frame
    assert len(find_faces(shared_video("pyfeat_single_face.mp4"))) == 1


def test_temporal_profile_rises_to_the_apex_and_falls_back():
    values = [temporal_profile(10, 13, 18, t) for t in range(9, 20)]
    assert values[0] == 0 and values[1] == 0  # before and at the onset
    assert values[4] == pytest.approx(1.0)  # apex
    assert values[-2] == 0 and values[-1] == 0  # offset and after
    assert values[1:5] == sorted(values[1:5]) and values[4:10] == sorted(values[4:10], reverse=True)


def test_warp_moves_content_by_the_field():
    size = 128
    image = np.zeros((size, size, 3), np.uint8)
    cx, cy = (int(c * size) for c in crop_coordinates((0.37, 0.78)))  # left mouth corner
    cv2.circle(image, (cx, cy), 3, (255, 255, 255), -1)
    field = displacement_field("positive", size, amplitude=4.0, flip=False)
    moved = warp(image, field, 1.0)
    ys, xs = np.nonzero(moved[..., 0] > 127)
    # positive: the corner goes up and out by about (-0.6, -0.8) * 4 px
    assert xs.mean() - cx == pytest.approx(-2.4, abs=0.6)
    assert ys.mean() - cy == pytest.approx(-3.2, abs=0.6)
    assert np.array_equal(warp(image, field, 0.0), image)


def test_events_are_brief_ordered_and_apart():
    rng = np.random.default_rng(3)
    events = place_events(600, 30.0, Recipe(), rng)
    assert len(events) > 10
    for (on, apex, off, emotion), nxt in zip(events, events[1:] + [None]):
        assert 3 <= off - on + 1 <= 15 and on < apex < off and emotion in CLASSES
        if nxt:
            assert nxt[0] > off
    slow = place_events(4000, 200.0, Recipe(), rng)  # SAMM-like rate: durations scale
    assert all(off - on + 1 >= 20 for on, _, off, _ in slow)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    rows = make_set([shared_video("pyfeat_single_face.mp4")], out,
                    Recipe(count=2, frames=96, size=64, amplitude=4.0), progress=False)
    return out, rows


def test_a_set_has_videos_ground_truth_and_its_recipe(small_set):
    out, rows = small_set
    assert read_table(out / "annotations.csv") == rows
    assert {r.video for r in rows} <= {"pyfeat_single_face_train000", "pyfeat_single_face_train001"}
    assert all(r.type == "micro" and r.subject == "pyfeat_single_face" for r in rows)
    video = read_centre_crops(out / "videos" / "pyfeat_single_face_train000.avi", 64)
    assert video.count == 96 and video.fps == pytest.approx(30.0)
    assert '"amplitude": 4.0' in (out / "synthetic.json").read_text()


@pytest.fixture(scope="module")
def still_face(tmp_path_factory):
    """A real face frozen in time: every change in a synthetic video of it is an injected event."""
    cap = cv2.VideoCapture(str(shared_video("pyfeat_single_face.mp4")))
    ok, frame = cap.read()
    cap.release()
    assert ok
    path = tmp_path_factory.mktemp("still") / "still_face.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 30, (frame.shape[1], frame.shape[0]))
    for _ in range(60):
        writer.write(frame)
    writer.release()
    return path


def test_injected_motion_is_where_and_when_the_ground_truth_says(still_face, tmp_path):
    rows = make_set([still_face], tmp_path, Recipe(count=3, frames=120, size=64, amplitude=4.0), progress=False)
    assert len(rows) >= 6
    for name in {r.video for r in rows}:
        frames = read_centre_crops(tmp_path / "videos" / f"{name}.avi", 64).frames.astype(np.float32)
        change = np.abs(frames - frames[0]).mean(-1)  # [T, 64, 64] against the undisturbed first frame
        events = [r for r in rows if r.video == name]
        moving = np.zeros(len(frames), bool)
        for r in events:
            moving[r.onset + 1 : r.offset] = True
            assert change[r.apex].mean() > 0.3  # visible at the apex
            assert change[r.onset].max() < 8 and change[r.offset].max() < 8  # at rest at both ends
            # The class decides where the face moves: the mouth (rows 0.78) or the brows (0.27).
            mouth = change[r.apex, int(64 * 0.72) : int(64 * 0.84)].mean()
            brows = change[r.apex, int(64 * 0.22) : int(64 * 0.34)].mean()
            if r.emotion in ("positive", "others"):
                assert mouth > 2 * brows
            elif r.emotion == "surprise":
                assert brows > mouth
        assert change[~moving].max() < 8  # nothing else moves (brightness gain aside, which is global)


def test_noise_mode_has_no_events(tmp_path):
    rows = make_set([shared_video("pyfeat_single_face.mp4")], tmp_path,
                    Recipe(count=1, frames=32, size=32, events=False), progress=False)
    assert rows == [] and read_table(tmp_path / "annotations.csv") == []
    assert (tmp_path / "videos" / "pyfeat_single_face_train000.avi").is_file()


def test_a_video_without_a_face_is_one_clear_error(tmp_path):
    blank = tmp_path / "blank.avi"
    writer = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"FFV1"), 30, (64, 64))
    for _ in range(5):
        writer.write(np.full((64, 64, 3), 128, np.uint8))
    writer.release()
    run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--videos", str(blank), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"error: {blank}: no face found for synthetic injection"


def test_parts_split_each_source_without_sharing_a_frame():
    for count in (1, 2, 3, 7, 100, 1234):
        taken = [set(range(count)[part_frames(count, part)]) for part in ("train", "val", "test")]
        assert all(taken), (count, taken)  # no part is empty, even for a tiny source
        if count >= 3:
            assert not (taken[0] & taken[1] or taken[0] & taken[2] or taken[1] & taken[2])
            assert max(taken[0]) < min(taken[1]) <= max(taken[1]) < min(taken[2])
    assert range(100)[part_frames(100, "test")] == range(75, 100)  # the held-out quarter


def test_ping_pong_bounces_hold_still_and_never_jump():
    frames = np.arange(5)[:, None]  # frame k holds the value k
    plain = ping_pong(frames, 16, 0.0)[:, 0].tolist()
    assert plain == [1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]
    held = ping_pong(frames, 40, 0.0, hold=3)[:, 0]
    assert np.abs(np.diff(held)).max() == 1  # playback never skips a frame
    runs = [(value, len(list(group))) for value, group in itertools.groupby(held.tolist())]
    # Whole bounces (not cut by the clip's ends) rest 1 + 3 frames; every other frame shows once.
    assert {length for value, length in runs[1:-1] if value in (0, 4)} == {4}
    assert {length for value, length in runs[1:-1] if value not in (0, 4)} == {1}
    assert ping_pong(frames, 40, 0.5, hold=3)[0, 0] != held[0]  # the phase moves the start
    assert ping_pong(frames[:1], 3, 0.3).tolist() == [[0], [0], [0]]


def test_head_sway_is_a_slow_drift_of_the_asked_size():
    sway = head_sway(300, 30.0, 128, 3.0, np.random.default_rng(0))
    assert sway.shape == (300, 2, 3)
    np.testing.assert_allclose(sway[0], [[1, 0, 0], [0, 1, 0]], atol=1e-6)  # starts where the face is
    centre = np.array([63.5, 63.5, 1.0])
    drift = sway @ centre - centre[:2]  # the roll turns about the centre: this is the sideways/up-down part
    np.testing.assert_allclose(np.abs(drift).max(axis=0), [3.0, 3.0], atol=1e-4)
    assert np.abs(np.diff(drift, axis=0)).max() < 0.1 * 3.0  # slow next to a 3-frame event
    roll = np.arctan2(sway[:, 1, 0], sway[:, 0, 0])
    assert 0 < np.abs(roll).max() <= 3.0 / 64 + 1e-6  # the frame's edge moves at most 3 px by the roll


def test_swaying_still_faces_move_as_a_whole(still_face, tmp_path):
    """``sway``: the held face drifts; the whole picture moves, by at most the sway plus the roll."""
    size, amount = 64, 2.0
    make_set([still_face], tmp_path, Recipe(count=1, frames=90, size=size, events=False, still=True, noise=0.0,
                                            sway=amount), progress=False)
    frames = read_centre_crops(next((tmp_path / "videos").iterdir()), size).frames.astype(np.float32).mean(-1)
    shifts = np.array([cv2.phaseCorrelate(frames[0], frame)[0] for frame in frames])
    assert np.abs(shifts).max() <= 2 * amount  # sideways plus roll
    assert np.hypot(*shifts.T).max() > amount / 2  # and it does move


def test_padded_face_frames_hold_the_crop_in_their_middle(still_face):
    """What a sway brings into view is real picture: the padded crop's middle is the crop."""
    source = face_sources([still_face])[0]
    plain, _ = read_face_frames(source, 64)
    padded, _ = read_face_frames(source, 64, pad=8)
    assert padded.shape[1:] == (80, 80, 3)
    middle = padded[:, 8:72, 8:72].astype(np.float32)
    assert np.abs(middle - plain).mean() < 3  # the same picture (resampled a little differently)
    assert np.abs(np.diff(padded[:, :9].astype(np.float32), axis=1)).mean() > 1  # rows of picture, not one row smeared


def test_sway_needs_fixed_crops(tmp_path):
    for bad in (dict(sway=2.0, align=True), dict(sway=-1.0)):
        with pytest.raises(ValueError, match="sway"):
            Recipe(**bad)
    run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--videos", str(shared_video("pyfeat_single_face.mp4")),
                          "--out", str(tmp_path), "--sway", "2", "--align"], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: --sway must be >= 0 and works on fixed crops only (not with --align)"]


def test_aligned_sets_are_framed_like_the_live_spotter_and_move_the_real_features(tmp_path):
    """``align=True``: the faces come out of the live spotter's own face pipeline, so running
    that pipeline on the generated video finds the eyes and nose where its template puts them,
    and the injected regions sit on the features they name (mouth corners for positive)."""
    from realtime.buffer import crop_landmarks
    from realtime.face import TEMPLATE, FaceTracker, key_points
    from realtime.types import Frame

    size = 128
    make_set([shared_video("pyfeat_single_face.mp4")], tmp_path, Recipe(count=1, frames=48, size=size, amplitude=12,
                                                                       align=True, events=False), progress=False)
    cap = cv2.VideoCapture(str(next((tmp_path / "videos").iterdir())))
    points, corners = [], []
    with FaceTracker(max_faces=1, crop_size=size) as tracker:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            for face in tracker.process(Frame(index, index / 30, 0.0, frame)).faces:
                points.append(key_points(face.landmarks))
                corners.append(crop_landmarks(face)[[61, 291]])
            index += 1
    assert index == 48 and len(points) == 48
    # The video itself is aligned: its eyes and nose sit on the template (within 4 % of the crop).
    assert np.abs(np.median(points, axis=0) - TEMPLATE * size).max() < 0.04 * size
    # The positive class's strongest motion lies on the mouth corners (within 6 % of the crop).
    field = np.linalg.norm(displacement_field("positive", size, 12.0, flip=False, aligned=True), axis=2)
    peaks = [np.unravel_index(np.argmax(np.where(half, field, 0)), field.shape)
             for half in (np.arange(size)[None, :] < size / 2, np.arange(size)[None, :] >= size / 2)]
    for (py, px), corner in zip(peaks, np.median(corners, axis=0)):
        assert abs(px - corner[0]) < 0.06 * size and abs(py - corner[1]) < 0.06 * size, (px, py, corner)


def test_a_set_written_over_an_older_one_replaces_its_videos(tmp_path):
    """Videos without rows in annotations.csv are read as event-free, so a smaller set made in
    the folder of a larger one must not leave the larger one's videos behind."""
    source = [shared_video("pyfeat_single_face.mp4")]
    make_set(source, tmp_path, Recipe(count=3, frames=16, size=32, events=False), progress=False)
    assert len(list((tmp_path / "videos").iterdir())) == 3
    make_set(source, tmp_path, Recipe(count=1, frames=16, size=32, events=False), progress=False)
    assert [p.name for p in (tmp_path / "videos").iterdir()] == ["pyfeat_single_face_train000.avi"]
    assert json.loads((tmp_path / "synthetic.json").read_text())["recipe"]["count"] == 1


def test_a_set_that_cannot_be_marked_keeps_the_old_one_whole(tmp_path, monkeypatch):
    """synthetic.json is replaced whole, and before the old set's files go: a full disk at
    that moment leaves the finished set as it was, not its record over missing videos
    (training would reuse that as a finished set)."""
    source = [shared_video("pyfeat_single_face.mp4")]
    make_set(source, tmp_path, Recipe(count=2, frames=16, size=32, events=False), progress=False)
    before = sorted(p.name for p in tmp_path.rglob("*")), (tmp_path / "synthetic.json").read_text()
    disk_full_when_replacing(monkeypatch, "synthetic.json")
    with pytest.raises(OSError, match="No space left on device"):
        make_set(source, tmp_path, Recipe(count=1, frames=16, size=32, events=False), progress=False)
    assert (sorted(p.name for p in tmp_path.rglob("*")), (tmp_path / "synthetic.json").read_text()) == before


def test_folders_that_are_not_a_synthetic_set_are_left_alone(tmp_path):
    source = [shared_video("pyfeat_single_face.mp4")]
    mine = tmp_path / "videos" / "mine.mp4"
    mine.parent.mkdir()
    mine.write_bytes(b"someone's video")
    with pytest.raises(FileExistsError, match="holds files but .* has no synthetic.json"):
        make_set(source, tmp_path, Recipe(count=1, frames=16, size=32, events=False), progress=False)
    assert mine.read_bytes() == b"someone's video" and not (tmp_path / "synthetic.json").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match="afile is a file, not a folder"):
        make_set(source, tmp_path / "afile", Recipe(count=1, frames=16, size=32, events=False), progress=False)


@pytest.mark.parametrize("bad, words", [
    (dict(count=0), "--count must be at least 1"),
    (dict(frames=0), "--frames must be 15-3000"),
    (dict(frames=3001), "--frames must be 15-3000"),
    (dict(size=0), "--size must be 32-512 pixels"),
    (dict(size=100_000), "--size must be 32-512 pixels, got 100000"),
    (dict(sway=1e6), "--sway must be at most 16 pixels"),
    (dict(size=64, sway=8.5), "--sway must be at most 8 pixels"),
    (dict(amplitude=float("nan")), "--amplitude must be a positive number"),
    (dict(amplitude=float("inf")), "--amplitude must be a positive number"),
    (dict(amplitude=0.0), "--amplitude must be a positive number"),
    (dict(sway=float("nan")), "--sway must be >= 0"),
    (dict(amplitude=500.0), r"--amplitude must be at most 16 pixels \(an eighth of the 128 px crop\), got 500"),
    (dict(size=64, amplitude=8.5), "--amplitude must be at most 8 pixels"),
])
def test_recipes_refuse_numbers_that_make_no_set(bad, words):
    with pytest.raises(ValueError, match=words) as err:
        Recipe(**bad)
    # A ConfigError: fgsl.train and realtime.bench, which build recipes from their own flags,
    # report it in one line too (a plain ValueError was a traceback there).
    assert isinstance(err.value, ConfigError)


def test_the_amplitude_bound_keeps_every_documented_use():
    """12 px of the 128 px crop is what fgsl.train, realtime.bench and the benchmarks use."""
    for amplitude, size in ((12.0, 128), (16.0, 128), (3.0, 128), (4.0, 64), (4.0, 32)):
        assert Recipe(amplitude=amplitude, size=size).amplitude == amplitude


def test_cli_refuses_bad_numbers_files_and_missing_videos_in_one_line(tmp_path):
    video = str(shared_video("pyfeat_single_face.mp4"))
    (tmp_path / "afile").write_text("")
    for args, line in [
        (["--videos", video, "--count", "-2"], "error: --count must be at least 1, got -2"),
        (["--videos", video, "--size", "0"], "error: --size must be 32-512 pixels, got 0"),
        (["--videos", video, "--size", "100000"], "error: --size must be 32-512 pixels, got 100000"),
        (["--videos", video, "--sway", "1e6"], "error: --sway must be at most 16 pixels (an eighth of the 128 px crop), got 1e+06"),
        (["--videos", video, "--seed", "-1"], "error: argument --seed: must be at least 0, got '-1'"),
        (["--videos", video, "--amplitude", "nan"], "error: argument --amplitude: must be a finite number, got 'nan'"),
        (["--videos", video, "--amplitude", "500"],
         "error: --amplitude must be at most 16 pixels (an eighth of the 128 px crop), got 500"),
        (["--videos", video, "--sway", "nan"], "error: argument --sway: must be a finite number, got 'nan'"),
        (["--videos", "/nonexistent.mp4"], "error: /nonexistent.mp4: no such video file or frame folder"),
        (["--videos", video, "--out", str(tmp_path / "afile")], f"error: {tmp_path / 'afile'} is a file, not a folder for a synthetic set"),
        (["--videos", str(tmp_path / "made" / "videos" / "x.avi"), "--out", str(tmp_path / "made")],
         f"error: --videos {tmp_path / 'made' / 'videos' / 'x.avi'} lies in --out {tmp_path / 'made'}, which the new set "
         "replaces; write it elsewhere"),
    ]:
        run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--out", str(tmp_path / "o"), *args],
                             capture_output=True, text=True)
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.strip().splitlines()[-1].endswith(line), (args, run.stderr)
    assert not (tmp_path / "o").exists()


def _finished_set(folder):
    """A finished small set in ``folder``; returns {relative path: bytes} of all its files."""
    make_set([shared_video("pyfeat_single_face.mp4")], folder, Recipe(count=2, frames=16, size=32, events=False),
             progress=False)
    return _files(folder)


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_that_fails_part_way_leaves_the_old_set_as_it_was(tmp_path, monkeypatch):
    """The new set is built in a hidden folder and swapped in only when whole: a failure after
    some videos (a full disk, no face to align, Ctrl-C) keeps every file of the old set,
    synthetic.json's finished record included, and leaves no half-built files behind."""
    import fgsl.data.synthetic as synthetic

    before = _finished_set(tmp_path)
    real, written = synthetic.write_video, []

    def fail_after_two(path, frames, fps):
        if len(written) == 2:
            raise KeyboardInterrupt
        real(path, frames, fps)
        written.append(path)

    monkeypatch.setattr(synthetic, "write_video", fail_after_two)
    with pytest.raises(KeyboardInterrupt):
        make_set([shared_video("pyfeat_single_face.mp4")], tmp_path, Recipe(count=4, frames=20, size=32, seed=1),
                 progress=False)
    assert len(written) == 2
    assert _files(tmp_path) == before
    assert json.loads((tmp_path / "synthetic.json").read_text())["recipe"]["count"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.csv", "synthetic.json", "videos"]


def test_a_new_folder_that_fails_is_marked_unfinished_not_finished(tmp_path, monkeypatch):
    """With no old set to keep, the folder holds only the "being written" record: fgsl.train
    reuses only a record with a recipe, so it rebuilds the set."""
    import fgsl.data.synthetic as synthetic

    def disk_full(path, frames, fps):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(synthetic, "write_video", disk_full)
    with pytest.raises(OSError) as err:
        make_set([shared_video("pyfeat_single_face.mp4")], tmp_path, Recipe(count=1, frames=16, size=32), progress=False)
    assert err.value.filename == str(tmp_path / "videos" / "pyfeat_single_face_train000.avi")  # not the hidden copy
    assert json.loads((tmp_path / "synthetic.json").read_text())["recipe"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.json"]


def _messages(stderr: str) -> list[str]:
    """stderr's lines without the progress bar's."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("synthetic:")]


def _limited_file_size(limit: int):
    """preexec_fn: files the child writes stop at ``limit`` bytes, as on a full disk (a write past
    it fails with EFBIG instead of the default SIGXFSZ killing the process)."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_video_that_cannot_be_written_whole_is_one_error_and_no_finished_set(tmp_path):
    """OpenCV's writer drops frames it cannot write (full disk, file-size limit) with a log line
    only: the cut-off video must fail the run, not be recorded as a finished set."""
    before = _finished_set(tmp_path)
    run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--videos", str(shared_video("pyfeat_single_face.mp4")),
                          "--out", str(tmp_path), "--count", "2", "--frames", "64", "--size", "64", "--still"],
                         capture_output=True, text=True, preexec_fn=_limited_file_size(40_000))
    assert run.returncode == 2, run.stderr
    lines = _messages(run.stderr)
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"error: {tmp_path / 'videos' / 'pyfeat_single_face_train000.avi'}: cannot write video "
                               "(File too large; "), lines
    assert _files(tmp_path) == before


def test_align_without_mediapipe_is_one_error_line(tmp_path):
    """``--align`` needs MediaPipe; when it cannot start (not installed, or no libEGL on a
    headless server) the generator says so in one line, like realtime.cam, and keeps the old set."""
    before = _finished_set(tmp_path)
    script = ("import sys; sys.modules['mediapipe'] = None\n"
              "from fgsl.data.synthetic import main\n"
              "raise SystemExit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", script, "--videos", str(shared_video("pyfeat_single_face.mp4")),
                          "--out", str(tmp_path), "--count", "1", "--frames", "32", "--align"],
                         capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = _messages(run.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: face tracking needs mediapipe"), run.stderr
    assert _files(tmp_path) == before


def test_sources_that_would_share_a_subject_are_refused_before_anything_is_written(tmp_path):
    """Videos and table rows are named after the source file: two sources with one name wrote
    over each other's videos (2 of 4 left) and pinned both sources' events on the survivors."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "face.mp4"
    second = tmp_path / "b" / "face.mp4"
    first.write_bytes(shared_video("pyfeat_single_face.mp4").read_bytes())
    second.write_bytes(shared_video("liveportrait_d6_expressions.mp4").read_bytes())
    out = tmp_path / "set"
    run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--videos", str(first), str(second),
                          "--out", str(out), "--count", "2", "--frames", "32", "--size", "32"],
                         capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert _messages(run.stderr) == [
        f"error: source videos {first} and {second} would both be subject 'face': one's videos "
        "(face_<part>NNN.avi) would overwrite the other's and annotations.csv would pin both sources' events on "
        "them; rename one"]
    assert not out.exists()
    # A face of a two-face video is subject <name>_face<i>, which another file's name can be too.
    two = tmp_path / "v.mp4"
    two.write_bytes(shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4").read_bytes())
    with pytest.raises(UsageError, match=r"v.mp4 and .*v_face1.mp4 would both be subject 'v_face1'"):
        make_set([two, first.rename(tmp_path / "v_face1.mp4")], out, Recipe(count=1, frames=16, size=32),
                 progress=False)
    assert not out.exists()


def test_one_source_given_twice_is_refused(tmp_path):
    video = shared_video("pyfeat_single_face.mp4")
    with pytest.raises(UsageError, match=f"^source video {video} is given twice: each of its faces would be two "
                                         "subjects of one set; give it once$"):
        make_set([video, video], tmp_path / "set", Recipe(count=1, frames=16, size=32), progress=False)
    link = tmp_path / "other_name.mp4"  # the same file under another name: two subjects of one face
    link.symlink_to(video)
    with pytest.raises(UsageError, match=f"^source videos {video} and {link} are one file"):
        make_set([video, link], tmp_path / "set", Recipe(count=1, frames=16, size=32), progress=False)
    assert not (tmp_path / "set").exists()


def test_a_part_played_far_more_often_than_once_is_a_warning(tmp_path):
    """``--frames 3000 --part test`` on the 2.4-s face loops its 18 frames 167 times: that is
    one warning line; the benchmarks' 300 frames (16.7 times) and still faces are not."""
    video = shared_video("pyfeat_single_face.mp4")  # 72 frames: its test part is 18
    recipe = dict(count=1, size=32, part="test", events=False)
    assert 300 < MAX_REPEATS * 18 < 400
    with pytest.warns(UserWarning) as caught:
        make_set([video], tmp_path / "long", Recipe(frames=400, **recipe), progress=False)
    assert [str(w.message) for w in caught] == [
        f"{video}: its test part is 18 frames, played 22 times over in each 400-frame video (more than "
        f"{MAX_REPEATS} times: the same few real movements again and again); use a longer source video or fewer frames"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_set([video], tmp_path / "ok", Recipe(frames=300, **recipe), progress=False)
        make_set([video], tmp_path / "still", Recipe(frames=400, still=True, **recipe), progress=False)
    run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--videos", str(video),
                          "--out", str(tmp_path / "cli"), "--count", "1", "--frames", "3000", "--size", "32",
                          "--part", "test", "--no-events"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert [line.strip() for line in _messages(run.stderr) if "warning" in line] == [
        f"warning: {video}: its test part is 18 frames, played 167 times over in each 3000-frame video (more than "
        f"{MAX_REPEATS} times: the same few real movements again and again); use a longer source video or fewer frames"]


def test_an_opencv_without_haar_cascades_is_one_line_naming_the_opencv_to_install(tmp_path, monkeypatch, capsys):
    """opencv-python(-headless) 5 has no CascadeClassifier (it moved to contrib; a GPU
    machine's image had that OpenCV): the face finder said AttributeError in a traceback."""
    from fgsl.data.synthetic import main

    monkeypatch.delattr(cv2, "CascadeClassifier")
    out = tmp_path / "set"
    assert main(["--videos", str(shared_video("pyfeat_single_face.mp4")), "--out", str(out), "--count", "1"]) == 2
    assert _messages(capsys.readouterr().err) == [
        f"error: this OpenCV ({cv2.__version__}) has no CascadeClassifier, which finds the faces of synthetic sets: "
        "install opencv-contrib-python, the OpenCV this package depends on (pip uninstall opencv-python "
        "opencv-python-headless; pip install opencv-contrib-python)"]
    assert not out.exists()


def test_a_recipe_too_big_for_the_memory_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """--frames 3000 --size 480 --still --sway 3 was killed by the kernel after 7.5 minutes
    ("Killed", nothing else) on a 24 GB machine. Now its need (6 bytes a pixel of 500 px crops: 13.5 GB) is
    weighed against what the machine has before anything is read; here it is given 8 GB."""
    import fgsl.data.synthetic as synthetic

    available = synthetic._available_memory()
    assert available is not None and available > 0  # (Linux: MemAvailable of /proc/meminfo)
    monkeypatch.setattr(synthetic, "_available_memory", lambda: 8 * 10**9)
    code = synthetic.main(["--videos", str(shared_video("pyfeat_single_face.mp4")), "--out", str(tmp_path / "s"),
                           "--count", "1", "--frames", "3000", "--size", "480", "--still", "--sway", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1] == (
        "error: --frames 3000 at --size 480 needs about 13.5 GB of memory per video, and 8.0 GB is available: use "
        "fewer --frames or a smaller --size")
    assert not (tmp_path / "s").exists()  # refused before the set's folder was made
    synthetic.check_memory(synthetic.Recipe(frames=3000, size=128))  # 0.9 GB: made


def test_available_memory_is_the_containers_when_its_limit_is_lower(tmp_path):
    """A container's cgroup limit kills the process whatever /proc/meminfo says the machine
    has; page cache the kernel can give back (inactive file pages) is not counted as used."""
    import fgsl.data.synthetic as synthetic

    def machine(files: dict[str, str]) -> Path:
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for name, text in {"proc/meminfo": "MemTotal: 33554432 kB\nMemAvailable: 20971520 kB\n", **files}.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    gb = 2**30
    v2 = {"sys/fs/cgroup/memory.max": f"{2 * gb}\n", "sys/fs/cgroup/memory.current": f"{gb + gb // 2}\n",
          "sys/fs/cgroup/memory.stat": f"anon {gb}\nfile {gb // 2}\ninactive_file {gb // 2}\n"}
    assert synthetic._available_memory(machine(v2)) == gb  # 2 - (1.5 - 0.5) GiB, under the machine's 20
    assert synthetic._available_memory(machine({**v2, "sys/fs/cgroup/memory.max": "max\n"})) == 20 * gb
    v1 = {"sys/fs/cgroup/memory/memory.limit_in_bytes": f"{4 * gb}\n",
          "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{3 * gb}\n",
          "sys/fs/cgroup/memory/memory.stat": f"inactive_file 0\ntotal_inactive_file {gb}\n"}
    assert synthetic._available_memory(machine(v1)) == 2 * gb
    unlimited_v1 = {**v1, "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}
    assert synthetic._available_memory(machine(unlimited_v1)) == 20 * gb
    assert synthetic._available_memory(machine({})) == 20 * gb  # no cgroup files: the machine's
    assert synthetic._available_memory(tmp_path / "nothing") is None
    # A Slurm job (or a systemd slice) is a cgroup below the root: its own limit counts, and so
    # does an ancestor's where that is lower.
    job = "sys/fs/cgroup/system.slice/slurmstepd.scope/job_42"
    nested = {"proc/self/cgroup": "0::/system.slice/slurmstepd.scope/job_42\n", "sys/fs/cgroup/memory.max": "max\n",
              "sys/fs/cgroup/memory.current": f"{10 * gb}\n", f"{job}/memory.max": f"{2 * gb}\n",
              f"{job}/memory.current": f"{gb}\n", f"{job}/memory.stat": "inactive_file 0\n"}
    assert synthetic._available_memory(machine(nested)) == gb
    slice_limit = {**nested, "sys/fs/cgroup/system.slice/memory.max": f"{gb // 2}\n",
                   "sys/fs/cgroup/system.slice/memory.current": "0\n"}
    assert synthetic._available_memory(machine(slice_limit)) == gb // 2
    v1_job = {"proc/self/cgroup": "5:memory:/slurm/uid_1/job_7\n4:pids:/\n", **unlimited_v1,
              "sys/fs/cgroup/memory/slurm/uid_1/job_7/memory.limit_in_bytes": f"{3 * gb}\n",
              "sys/fs/cgroup/memory/slurm/uid_1/job_7/memory.usage_in_bytes": f"{gb}\n"}
    assert synthetic._available_memory(machine(v1_job)) == 2 * gb
    # A container shows its own cgroup at the mount point while /proc/self/cgroup names the
    # host's path: the mount point's files are read.
    assert synthetic._available_memory(machine({**v2, "proc/self/cgroup": "0::/docker/abc123\n"})) == gb
