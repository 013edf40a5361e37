"""``python -m realtime.cam`` end to end: real face video, real MediaPipe, the flow spotter.

Movements are injected into a *still* real face (``fgsl.data.synthetic`` with ``still=True``):
the shared source videos talk and smile all the time, so the still face is where the
spotter's own errors show (docs/benchmarks.md has the numbers on moving faces too).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fgsl.data.synthetic import (Recipe, displacement_field, face_sources, make_set, read_face_frames, temporal_profile,
                                 warp, write_video)
from fgsl.cli import UsageError
from fgsl.evaluate import evaluate, read_intervals
from realtime.cam import build_parser, main
from realtime.capture import CameraSource, Capture
from realtime.face import MODEL_PATH, FaceTracker
from realtime.interrupts import STILL_FINISHING
from realtime.pipeline import Pipeline
from realtime.spotters.flow import FlowSpotter
from realtime.types import Frame, validate_event_line
from tests.conftest import SAMPLE_VIDEO, shared_video
from tests.fakes import FakeCamera, scripted_opener

SOURCE = "pyfeat_single_face.mp4"
TWO_FACES = "liveportrait_d18_d19_two_faces_sidebyside.mp4"  # 216 frames, a few events


@pytest.fixture(scope="module")
def still_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("still")
    make_set([shared_video(SOURCE)], out, Recipe(count=1, frames=240, amplitude=12, part="test", still=True, seed=5),
             progress=False)
    return out


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    frames, _ = read_face_frames(face_sources([shared_video(SOURCE)])[0], 128)
    return frames[60]


def run_cam(capfd, *args: str) -> tuple[int, list[str], str]:
    code = main(list(args))
    out, err = capfd.readouterr()
    return code, out.splitlines(), err


def read_frames(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    return frames


def events_of(path: Path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        validate_event_line(line)
    return lines


@pytest.mark.slow
def test_flow_spotter_finds_injected_movements_on_a_still_face(still_set, tmp_path, capfd):
    video = next((still_set / "videos").glob("*.avi"))
    code, out, err = run_cam(capfd, "--source", str(video), "--headless", "--events", str(tmp_path / "e.jsonl"),
                             "--csv", str(tmp_path / "p.csv"), "--subjects-from", str(still_set / "annotations.csv"))
    assert code == 0, err
    assert "summary: 240 frames" in err and "0 dropped" in err
    events = events_of(tmp_path / "e.jsonl")
    assert events and all(e["spotter"] == "flow" and e["track"] == 0 for e in events)
    assert len(out) == len(events)  # one console line per event
    result = evaluate(read_intervals(still_set / "annotations.csv"), read_intervals(tmp_path / "p.csv"), mode="strict")
    # Measured 0.91 (5 of 6 found, no false alarm); a spotter that lost its way would score near 0.
    assert result["spotting"]["f1"] >= 0.75, result["spotting"]


@pytest.mark.slow
def test_no_movement_on_a_still_face_raises_no_event(tmp_path, capfd):
    make_set([shared_video(SOURCE)], tmp_path / "set", Recipe(count=1, frames=240, events=False, still=True, part="test"),
             progress=False)
    video = next((tmp_path / "set" / "videos").glob("*.avi"))
    code, _, err = run_cam(capfd, "--source", str(video), "--headless", "--events", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    assert events_of(tmp_path / "e.jsonl") == []


@pytest.mark.slow
def test_a_lasting_change_of_expression_is_not_a_micro_expression(face_crop, tmp_path, capfd):
    """A smile that comes in 5 frames and stays is no brief movement: the step-lobe rule."""
    field = displacement_field("positive", 128, 12, flip=False)
    rng = np.random.default_rng(0)
    frames = []
    for t in range(200):
        strength = float(np.clip((t - 100) / 5, 0, 1))
        frame = warp(face_crop.astype(np.float32), field, strength) + rng.normal(0, 2.0, face_crop.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    write_video(tmp_path / "step.avi", np.stack(frames), 30.0)
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "step.avi"), "--headless", "--events", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    assert [e for e in events_of(tmp_path / "e.jsonl") if e["kind"] == "micro"] == []


@pytest.mark.slow
def test_long_movements_are_reported_once_without_their_lobes(face_crop, tmp_path, capfd):
    """Five 0.5 s movements on a still face, at different phases of the spotter's windows: each
    is one micro-expression, and nothing is reported around them (the frames a lag before and
    after a movement differ from it by half of it: lobes, not movements)."""
    rng = np.random.default_rng(1)
    onsets = [30, 87, 141, 203, 258]
    emotions = ["positive", "negative", "surprise", "others", "positive"]
    frames, rows = [], ["subject,video,onset,apex,offset,type,emotion,aus"]
    fields = {name: displacement_field(name, 128, 12, flip=False) for name in set(emotions)}
    for t in range(300):
        frame = face_crop.astype(np.float32)
        for onset, emotion in zip(onsets, emotions):
            if onset <= t <= onset + 14:
                frame = warp(frame, fields[emotion], temporal_profile(onset, onset + 6, onset + 14, t))
        frames.append(np.clip(frame + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8))
    rows += [f"s,long,{onset},{onset + 6},{onset + 14},micro,{emotion}," for onset, emotion in zip(onsets, emotions)]
    write_video(tmp_path / "long.avi", np.stack(frames), 30.0)
    (tmp_path / "gt.csv").write_text("\n".join(rows) + "\n")
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "long.avi"), "--headless", "--subject", "s",
                           "--csv", str(tmp_path / "p.csv"), "--events", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    result = evaluate(read_intervals(tmp_path / "gt.csv"), read_intervals(tmp_path / "p.csv"), mode="strict")
    assert (result["spotting"]["tp"], result["spotting"]["fp"]) == (5, 0), result["spotting"]
    assert len(events_of(tmp_path / "e.jsonl")) == 5  # no macro-expression either


def test_unreadable_file_is_one_clear_line(tmp_path, capfd):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    code, _, err = run_cam(capfd, "--source", str(bad), "--headless")
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error:") and "broken.mp4" in err


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                    reason="needs ffmpeg and ffprobe (the set-up installs them)")
def test_files_opencv_cannot_open_say_why(tmp_path, capfd):
    """OpenCV only says no; an audio-only file and an MP4 whose recording was cut off before
    its index was written need other remedies than a corrupt file, so the line says which."""
    audio, full, cut = tmp_path / "voice.m4a", tmp_path / "full.mp4", tmp_path / "cut.mp4"
    for args in (["-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(audio)],
                 ["-i", str(shared_video(SOURCE)), "-c", "copy", "-movflags", "-faststart", str(full)]):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # the index (moov) comes last
    garbage = tmp_path / "garbage.mp4"
    garbage.write_text("not a video\n" * 100)
    for path, why in ((audio, "it has no video stream (only audio)"),
                      (cut, "an MP4 without its index (moov atom): a recording or download cut off before it finished"),
                      (garbage, "OpenCV cannot open this file as a video (ffprobe: ")):
        code, _, err = run_cam(capfd, "--source", str(path), "--headless")
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: {why}"), err


def test_missing_file_and_bad_flags_are_one_clear_line(tmp_path, capfd):
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "nope.mp4"), "--headless")
    assert code == 2 and err.startswith("error:") and "nope.mp4" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", str(shared_video(SOURCE)), "--headless", "--max-faces", "0"])
    assert exit_info.value.code == 2
    assert capfd.readouterr().err.strip().splitlines()[-1].endswith("argument --max-faces: must be at least 1, got '0'")
    with pytest.raises(SystemExit) as exit_info:
        main(["--spotter", "magic"])
    assert exit_info.value.code == 2  # argparse's usage error, one line on stderr


def test_video_without_a_face_is_a_clear_error(tmp_path, capfd):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (45, 240, 320, 3), dtype=np.uint8)
    write_video(tmp_path / "noise.avi", frames, 30.0)
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "noise.avi"), "--headless", "--no-face-warning", "1")
    assert code == 2
    assert "warning: no face in view for 1 s" in err
    assert err.strip().splitlines()[-1].startswith("error:") and "no face found in 45 frames" in err
    assert "Traceback" not in err


def test_corrupt_face_model_is_a_clear_error(tmp_path, capfd):
    model = tmp_path / "face_landmarker.task"
    model.write_bytes(b"PK\x03\x04 this is not a model")
    code, _, err = run_cam(capfd, "--source", str(shared_video(SOURCE)), "--headless", "--face-model", str(model))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: MediaPipe could not load face model") and str(model) in last, err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_corrupt_fgsl_weights_are_a_clear_error_before_any_file_is_written(damage, tmp_path, capfd):
    from fgsl import weights
    from fgsl.config import preset
    from fgsl.model import build

    weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True)
    path = tmp_path / "run" / "model.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flipped":
        data[-100] ^= 0xFF  # inside the tensor data
    else:
        del data[1000:]
    path.write_bytes(bytes(data))
    code, out, err = run_cam(capfd, "--source", str(shared_video(SOURCE)), "--headless", "--weights",
                             str(tmp_path / "run"), "--events", str(tmp_path / "e.jsonl"))
    lines = err.strip().splitlines()
    assert code == 2 and out == [] and "Traceback" not in err, err
    assert lines[-1].startswith("error:") and "corrupt" in lines[-1] and str(tmp_path / "run") in lines[-1], err
    assert not (tmp_path / "e.jsonl").exists()  # outputs are opened only once the spotter has loaded


@pytest.mark.slow
def test_face_lost_mid_video_ends_the_track_and_keeps_its_events(still_set, tmp_path, capfd):
    video = next((still_set / "videos").glob("*.avi"))
    frames = read_frames(video)
    blank = np.zeros_like(frames[0])
    write_video(tmp_path / "lost.avi", np.stack(frames + [blank] * 60), 30.0)
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "lost.avi"), "--headless", "--no-face-warning", "1",
                           "--events", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    assert "warning: no face in view for 1 s" in err
    code, _, err = run_cam(capfd, "--source", str(video), "--headless", "--events", str(tmp_path / "whole.jsonl"))
    assert code == 0, err
    lost, whole = events_of(tmp_path / "e.jsonl"), events_of(tmp_path / "whole.jsonl")
    # The movements before the face left are all there, exactly as without the blank tail...
    assert lost and [(e["onset"], e["offset"]) for e in lost] == [(e["onset"], e["offset"]) for e in whole]
    # ...and were emitted when the track ended (at the cut to blank frames), not at the end of the file.
    assert max(e["emitted_s"] for e in lost) < (len(frames) + 30) / 30


@pytest.mark.slow
def test_a_face_lost_right_after_a_window_is_finished_when_it_is_lost(still_set):
    """The face's last frame completes a window (track length = window + stride), so its
    buffer has no last window to give: the track must still be finished at once (its events
    emitted, the spotter's cached flow and the merger's state dropped), not at the end of the
    stream, or a long live run leaks memory and a kill loses the events."""
    video = next((still_set / "videos").glob("*.avi"))
    spotter = FlowSpotter()
    face = read_frames(video)[:spotter.window + spotter.stride]
    images = face + [np.zeros_like(face[0])] * 60  # (a cut to black: the track ends at once)
    pipeline = Pipeline(FaceTracker(max_faces=1), spotter)
    events = []
    for index, image in enumerate(images):
        events += pipeline.step(Frame(index, index / 30, time.monotonic(), image)).events
    assert pipeline.spotter.signals() == {} and pipeline.merger.pending == 0  # nothing left of the track
    assert events and max(e.emitted_s for e in events) < (len(face) + 20) / 30  # emitted as it was lost
    assert pipeline.finish() == []


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
def test_a_hangup_someone_ignores_stays_ignored():
    """Under ``nohup`` SIGHUP is ignored: closing the terminal must not end the run."""
    from realtime.interrupts import TERMINATING, interrupt_once

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupt_once(("SIGINT", *TERMINATING)):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)  # ours
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_stopping_before_any_face_came_is_no_error(tmp_path):
    """Ctrl-C a few frames into a video without a face yet: the user stopped it; "no face
    found" is for a source that ended without one."""
    rng = np.random.default_rng(3)
    write_video(tmp_path / "noise.avi", rng.integers(0, 256, (150, 120, 160, 3), dtype=np.uint8), 30.0)
    (tmp_path / "e.jsonl").write_text("an earlier run\n")
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cam", "--source", "noise.avi", "--headless", "--realtime",
                             "--events", "e.jsonl"], cwd=tmp_path, env=cam_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started = proc.stderr.readline()  # "spotting noise.avi ..." comes once everything has loaded
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert started.startswith("spotting") and proc.returncode == 0, started + err
    assert err.strip().splitlines()[-1].startswith("summary:") and "no face found" not in err, err
    assert "warning: no face was tracked: --events e.jsonl left as they were" in err, err
    assert (tmp_path / "e.jsonl").read_text() == "an earlier run\n"


def test_after_a_camera_outage_the_pipeline_does_not_spot_copies_of_the_last_frame(still_set):
    """8 s without frames, then the face again: its old track ends (one last window) and a new
    one starts; filling the gap would have run 30 windows of frozen copies in one step."""
    video = next((still_set / "videos").glob("*.avi"))
    images = read_frames(video)
    spotter = FlowSpotter()
    batches = []
    real_process = spotter.process

    def counted(windows):  # the real spotter, counting the windows of each call
        batches.append(len(windows))
        return real_process(windows)

    spotter.process = counted
    pipeline = Pipeline(FaceTracker(max_faces=1), spotter)
    for index, image in enumerate(images[:120]):
        pipeline.step(Frame(index, index / 30, time.monotonic(), image))
    calls = len(batches)
    first_after = pipeline.step(Frame(120, 120 / 30 + 8.0, time.monotonic(), images[120]))
    assert batches[calls:] in ([], [1])  # at most the old track's last window
    assert [f.track for f in first_after.faces] == [1]
    pipeline.finish()


def test_two_faces_give_two_tracks(tmp_path, capfd):
    code, _, err = run_cam(capfd, "--source", str(shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4")),
                           "--headless", "--quiet", "--sensitivity", "3", "--events", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    tracks = {e["track"] for e in events_of(tmp_path / "e.jsonl")}
    assert tracks == {0, 1}  # both faces spotted, each under one id (no third id: no track split)


@pytest.mark.slow
def test_webcam_disconnect_and_reconnect_through_the_cli(still_set, tmp_path, capfd, monkeypatch):
    """``python -m realtime.cam --device 0`` with a fake camera serving real frames: lost,
    reopened, then gone for good. Only the physical webcam is faked (``parse_source``); the
    real Capture runs, with a shorter give-up time than a user's 10 s to keep the test short."""
    import realtime.cam as cam

    video = next((still_set / "videos").glob("*.avi"))
    frames = read_frames(video)
    first = FakeCamera(frames[:120], fail_after=120, period_s=1 / 30)
    second = FakeCamera(frames[120:], fail_after=120, period_s=1 / 30)
    monkeypatch.setattr(cam, "parse_source", lambda device, path, fps=None: CameraSource(
        f"camera {device}", scripted_opener(first, second)))
    monkeypatch.setattr(cam, "Capture", functools.partial(Capture, give_up_s=0.5, backoff_s=(0.05, 0.1)))
    code, out, err = run_cam(capfd, "--device", "0", "--headless", "--events", str(tmp_path / "e.jsonl"),
                             "--csv", str(tmp_path / "p.csv"))
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: camera 0 lost"), err
    # Headless, the outage and the return are said as they happen (the overlay shows them too).
    said = [line for line in lines if line.startswith("warning: camera 0")]
    assert said[0] == "warning: camera 0 lost: reopening it (giving up after 0.5 s)", err
    assert re.fullmatch(r"warning: camera 0 back after [0-9.]+ s", said[1]) and said[2] == said[0], err
    summary = re.match(r"summary: (\d+) frames in .* (\d+) dropped, (\d+) events", lines[-2])
    assert summary, err
    frames_done, dropped, event_count = map(int, summary.groups())
    assert (first.reads, second.reads) == (120, 120)  # both halves were served...
    assert frames_done + dropped == 240  # ...and each frame was either spotted or counted as dropped
    events = events_of(tmp_path / "e.jsonl")
    assert event_count == len(events) == len(out) > 0  # every event reached the file before the error
    # Frame numbers go on across the reconnect, and spotting goes on after it: the still set's
    # ground truth has movements in the second half, and one of them is found there.
    truth = [(int(r["onset"]), int(r["offset"])) for r in csv.DictReader(open(still_set / "annotations.csv"))]
    later = [(on, off) for on, off in truth if on >= 125]
    assert later and any(max(0, min(off, e["offset"]) - max(on, e["onset"]) + 1) >= 0.5 * (off - on + 1)
                         for on, off in later for e in events), (later, events)
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["subject", "video", "onset", "offset", "emotion"] and rows[1:]
    assert {(r[0], r[1]) for r in rows[1:]} == {("camera0", "camera0")}


def test_save_writes_the_annotated_video(tmp_path, capfd):
    sample = shared_video(SOURCE)
    code, _, err = run_cam(capfd, "--source", str(sample), "--headless", "--save", str(tmp_path / "out.mp4"))
    assert code == 0, err
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    source = cv2.VideoCapture(str(sample))
    _, original = source.read()
    source.release()
    assert ok and frames == 72 and first.shape == original.shape
    assert np.abs(first.astype(int) - original.astype(int)).mean() > 1.0  # the overlay is drawn on it


def cam_env() -> dict[str, str]:
    """The environment of a ``python -m realtime.cam`` process that imports this checkout."""
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cam_process(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """The CLI as users run it: a process of its own (so what Python prints at exit shows too)."""
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([sys.executable, "-m", "realtime.cam", *args], cwd=cwd, env=cam_env(), text=True,
                          timeout=300, **streams)


@pytest.mark.slow
@pytest.mark.parametrize("sig, times", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 3)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-thrice"])
def test_ctrl_c_and_sigterm_end_cleanly_with_every_event_written_and_a_summary(still_set, tmp_path, sig, times):
    """The signal after the first event of a real-time run: status 0, no traceback, the
    summary line, the event file holding every event the summary counts, and a ``--save``
    video that plays (killed outright, an mp4 lacks its index). Ctrl-C pressed again while
    the run finishes is held: it used to stop the finishing, or torch's exit handlers (a
    traceback, and a death by SIGINT)."""
    video = next((still_set / "videos").glob("*.avi"))
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cam", "--source", str(video), "--headless", "--realtime",
                             "--events", "e.jsonl", "--save", "out.mp4"], cwd=tmp_path, env=cam_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()  # printed (and flushed) as soon as the first event is final
        for _ in range(times):
            proc.send_signal(sig)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert first and proc.returncode == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    lines = [line for line in err.strip().splitlines() if line != STILL_FINISHING]
    assert "interrupted: finishing open events" in lines and lines[-1].startswith("summary:"), err
    frames, count = map(int, re.match(r"summary: (\d+) frames .* (\d+) events", lines[-1]).groups())
    assert 0 < frames < 240  # stopped part-way through the 8-s video
    assert count == len(events_of(tmp_path / "e.jsonl")) == 1 + len(out.splitlines())
    assert len(read_frames(tmp_path / "out.mp4")) >= frames - 1  # (the frame being drawn may be cut)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
def test_a_closed_terminal_ends_the_run_with_every_event_written(still_set, tmp_path):
    """The terminal closes: SIGHUP, and every later write to it fails (EIO). The line
    "interrupted: finishing open events" raised, the run ended with status 1 and the open
    event never reached --events. Status lines now give way: the events file gets every
    event the console printed (stdout here is a pipe that still works)."""
    video = next((still_set / "videos").glob("*.avi"))
    main_fd, terminal = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cam", "--source", str(video), "--headless", "--realtime",
                             "--events", "e.jsonl"], cwd=tmp_path, env=cam_env(), text=True,
                            stdout=subprocess.PIPE, stderr=terminal)
    try:
        os.close(terminal)
        first = proc.stdout.readline()  # the first event is final
        os.close(main_fd)  # the terminal window closes: writes to it now fail with EIO
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert first and proc.returncode == 0
    assert len(events_of(tmp_path / "e.jsonl")) == 1 + len(out.splitlines())


def test_with_stderr_closed_status_lines_stay_off_stdout(tmp_path):
    """``2>&-``: ``sys.stderr`` is None, and ``print(file=None)`` writes to stdout, so the
    status lines landed among the event lines (after MediaPipe's start-up had failed on
    ``sys.stderr.flush()``). The run works and stdout holds events only."""
    done = subprocess.run([sys.executable, "-m", "realtime.cam", "--source", str(SAMPLE_VIDEO), "--headless",
                           "--events", "e.jsonl"], cwd=tmp_path, env=cam_env(), text=True,
                          stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=300)
    assert done.returncode == 0 and done.stdout == "", done.stdout
    assert (tmp_path / "e.jsonl").exists()


def test_ctrl_c_while_a_silent_stream_opens_ends_the_run_at_once(tmp_path):
    """A stream URL whose server takes the connection and never answers: OpenCV's open waits
    for its 30-s timeout, and Ctrl-C waited with it (the main thread was inside OpenCV). The
    open runs in a thread of its own now; Ctrl-C ends the run with ``interrupted``."""
    import socket

    with socket.socket() as silent:  # connections complete in its backlog; nothing is ever sent
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/stream.mp4"
        proc = subprocess.Popen([sys.executable, "-m", "realtime.cam", "--source", url, "--headless"], cwd=tmp_path,
                                env=cam_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        held = []  # the accepted connection, kept open and silent
        try:
            silent.settimeout(1)
            deadline = time.monotonic() + 60
            while not held and proc.poll() is None and time.monotonic() < deadline:
                try:
                    held.append(silent.accept()[0])  # the open has begun
                except TimeoutError:
                    continue
            if not held:
                _, err = proc.communicate(timeout=60)
                assert "cannot open" in err, err  # it ended for another reason than its OpenCV's
                pytest.skip("this OpenCV does not open HTTP streams (no FFmpeg backend)")
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=15)  # not OpenCV's 30 s
        finally:
            proc.kill()
            for connection in held:
                connection.close()
    assert (proc.returncode, err.strip().splitlines()[-1:]) == (130, ["interrupted"]), err


def test_a_stale_display_is_one_line_not_an_abort(tmp_path):
    """DISPLAY left by an ended ``ssh -X`` session: Qt (OpenCV's window) aborted the process
    (SIGABRT, status 134) after the camera and model had loaded."""
    from realtime.overlay import _needs_x_server

    if not _needs_x_server():
        pytest.skip("this OpenCV's windows do not need an X server")
    done = subprocess.run([sys.executable, "-m", "realtime.cam", "--source", str(SAMPLE_VIDEO)], cwd=tmp_path,
                          env={**cam_env(), "DISPLAY": ":987"}, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2, ["error: no display available: use --headless (no X server answers at DISPLAY=:987)"])


def test_a_face_model_of_the_wrong_models_is_one_line_and_no_traceback_at_exit(tmp_path):
    """A bundle whose detector and landmark models are swapped loads, then fails on its first
    frame; its landmarker's __del__ then printed "Exception ignored ... TypeError" at exit."""
    import zipfile

    swap = {"face_detector.tflite": "face_landmarks_detector.tflite",
            "face_landmarks_detector.tflite": "face_detector.tflite"}
    model = tmp_path / "swapped.task"
    with zipfile.ZipFile(MODEL_PATH) as shipped, zipfile.ZipFile(model, "w", zipfile.ZIP_STORED) as bundle:
        for item in shipped.infolist():
            bundle.writestr(swap.get(item.filename, item.filename), shipped.read(item))
    done = cam_process("--source", str(shared_video(SOURCE)), "--headless", "--face-model", str(model), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: MediaPipe could not load face model {model}: "
                                                "CalculatorGraph::Run() failed"]


def test_bad_outputs_are_refused_before_anything_is_overwritten(tmp_path):
    """Paths are checked first; files are opened only once the face model has loaded."""
    sample = tmp_path / "sample.mp4"
    sample.write_bytes(shared_video(SOURCE).read_bytes())
    events = tmp_path / "earlier.jsonl"
    events.write_text("kept\n")
    for args, why in ((["--events", "/proc/no/e.jsonl"], "cannot write here"),
                      (["--events", str(events), "--save", str(tmp_path / "out.txt")], "name it .mp4"),
                      (["--save", str(sample)], "would overwrite --source"),
                      (["--csv", "sample.mp4"], "would overwrite --source"),
                      (["--events", "x.jsonl", "--csv", "./x.jsonl"], "--events and --csv both name"),
                      (["--events", str(events), "--face-model", "nope.task"], "nope.task is missing")):
        proc = cam_process("--source", str(sample), "--headless", *args, cwd=tmp_path)
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:"), proc.stderr  # no MediaPipe noise
    assert events.read_text() == "kept\n" and sample.read_bytes() == shared_video(SOURCE).read_bytes()


def test_outputs_that_are_the_shipped_model_a_frame_or_a_weights_file_are_refused(tmp_path):
    """The input check left out the face model when --face-model was not given (`--events
    realtime/models/face_landmarker.task` emptied the shipped model: every later run failed),
    a frame of a frame-folder source (truncated at the first face, then the run died on it)
    and --weights' files."""
    from fgsl import weights
    from fgsl.config import preset
    from fgsl.model import build
    from realtime.face import MODEL_PATH

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, image in enumerate(read_frames(shared_video(SOURCE))[:3]):
        cv2.imwrite(str(frames / f"img_{i:04d}.png"), image)
    weights.save(build(preset("tiny"), seed=0), tmp_path / "run", trained=True)
    model = MODEL_PATH.read_bytes()
    before = {p: p.read_bytes() for p in [*frames.iterdir(), *(tmp_path / "run").iterdir()]}
    for args, why in ((["--source", str(shared_video(SOURCE)), "--events", str(MODEL_PATH)],
                       f"--events {MODEL_PATH} would overwrite --face-model {MODEL_PATH}; write it elsewhere"),
                      (["--source", str(frames), "--fps", "30", "--events", str(frames / "img_0001.png")],
                       f"--events {frames / 'img_0001.png'} would overwrite a frame of --source {frames} (or be read "
                       "as one); write it elsewhere"),
                      (["--source", str(frames), "--fps", "30", "--csv", str(frames / "new.png")],
                       "would overwrite a frame of --source"),  # not a frame yet, but one the next run would read
                      (["--source", str(shared_video(SOURCE)), "--weights", str(tmp_path / "run"), "--csv",
                        str(tmp_path / "run" / "config.json")],
                       f"would overwrite --weights {tmp_path / 'run' / 'config.json'}")):
        try:
            proc = cam_process("--headless", *args, cwd=tmp_path)
        finally:
            if MODEL_PATH.read_bytes() != model:  # the regression this test is about: leave no broken checkout
                MODEL_PATH.write_bytes(model)
                pytest.fail("the run overwrote the shipped face model")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and why in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in [*frames.iterdir(), *(tmp_path / "run").iterdir()]} == before


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A good run of the two-face video with every file output: its folder and its process."""
    folder = tmp_path_factory.mktemp("good_run")
    run = cam_process("--source", str(shared_video(TWO_FACES)), "--headless", "--events", "e.jsonl", "--csv", "p.csv",
                      "--save", "out.mp4", cwd=folder)
    assert run.returncode == 0 and run.stdout.count("\n") >= 2, run.stderr  # enough events to cut short
    return folder, run


def test_one_movement_of_a_face_is_one_event(good_run):
    """The flow spotter's windows each see a movement with its lobes (a lag either side);
    across windows the merger joins what lies that close on one face. Before, the two-face
    video's left face got two overlapping events 0.13 s apart (frames 58-66 and 63-72)."""
    from realtime.spotters.flow import FlowSettings

    lag_s = FlowSettings().lag / FlowSettings().fps
    events = events_of(good_run[0] / "e.jsonl")
    assert events
    for track in {e["track"] for e in events}:
        mine = sorted((e for e in events if e["track"] == track), key=lambda e: e["onset_s"])
        for a, b in zip(mine, mine[1:]):
            assert b["onset_s"] - a["offset_s"] > lag_s, (a, b)


def test_a_closed_stdout_silences_the_console_but_not_the_files(good_run, tmp_path):
    video = shared_video(TWO_FACES)
    read, write = os.pipe()
    os.close(read)  # the reader (`| head -0`) has gone before the first event
    with os.fdopen(write, "w") as closed:
        cut = cam_process("--source", str(video), "--headless", "--events", "cut.jsonl", cwd=tmp_path, stdout=closed)
    assert cut.returncode == 0 and "summary:" in cut.stderr and "Exception" not in cut.stderr, cut.stderr
    assert (tmp_path / "cut.jsonl").read_text().count("\n") == (good_run[0] / "e.jsonl").read_text().count("\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_console_that_cannot_be_written_keeps_every_event_in_the_files_and_says_so(good_run, tmp_path):
    """``> run.log`` on a full disk: the console falls silent, the run goes on, the files get
    every event, and the end is the summary and one error line (the log is not whole)."""
    with open("/dev/full", "w") as full:
        run = cam_process("--source", str(shared_video(TWO_FACES)), "--headless", "--events", "e.jsonl",
                          "--csv", "p.csv", cwd=tmp_path, stdout=full)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr and err[-2].startswith("summary:"), run.stderr
    assert err[-1] == ("error: stdout: cannot write event lines (No space left on device), so the console stopped at "
                       "the first that failed; --events e.jsonl and --csv p.csv have every event")
    good = good_run[0]
    assert len(events_of(tmp_path / "e.jsonl")) == len(events_of(good / "e.jsonl")) >= 2
    assert (tmp_path / "p.csv").read_text() == (good / "p.csv").read_text()


def test_a_run_that_never_tracks_a_face_leaves_earlier_files_as_they_were(good_run, tmp_path, capfd):
    """A wrong video (no face) with the paths of a good run: "no face found", and the good
    run's events, CSV and video are untouched (files open, and the video replaces, only at
    the first face)."""
    names = ("e.jsonl", "p.csv", "out.mp4")
    for name in names:
        shutil.copy(good_run[0] / name, tmp_path / name)
    before = {name: (tmp_path / name).read_bytes() for name in names}
    assert before["e.jsonl"] and before["p.csv"].count(b"\n") >= 2  # something to lose
    noise = tmp_path / "noise.avi"
    write_video(noise, np.random.default_rng(1).integers(0, 256, (45, 240, 320, 3), dtype=np.uint8), 30.0)
    code, _, err = run_cam(capfd, "--source", str(noise), "--headless", *(f"--events={tmp_path / 'e.jsonl'}",
                           f"--csv={tmp_path / 'p.csv'}", f"--save={tmp_path / 'out.mp4'}"))
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {noise}: no face found in 45 frames", err
    assert {name: (tmp_path / name).read_bytes() for name in names} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "noise.avi"])  # no temporary file left


def _file_size_limit(limit: int):
    """A ``preexec_fn``: files of the child stop growing at ``limit`` bytes, as on a full disk
    (writes fail with EFBIG; SIGXFSZ, which would kill the child, is ignored)."""
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no file size limits on this system")
def test_a_video_the_disk_cut_short_is_an_error_and_the_earlier_one_stays(tmp_path):
    """OpenCV drops failed writes silently (exit 0 and an unplayable mp4, before): the video is
    read back at the end; not whole, it is one error line and replaces nothing."""
    (tmp_path / "out.mp4").write_bytes(b"an earlier video")
    run = cam_process("--source", str(shared_video(SOURCE)), "--headless", "--save", "out.mp4", cwd=tmp_path,
                      preexec_fn=_file_size_limit(200_000))  # the whole video is about 380 KB
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr and err[-2].startswith("summary:"), run.stderr
    assert err[-1] == ("error: --save out.mp4: the video could not be written whole (OpenCV reads back none of the 72 "
                       "frames written; a full disk or a file size limit?)")
    assert (tmp_path / "out.mp4").read_bytes() == b"an earlier video" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("flag", [["--backend", "bogus"], ["--engine-device", "bogus"], ["--preset", "tiny"],
                                  ["--allow-untrained"], ["--no-cache"]], ids=lambda flag: flag[0])
def test_fgsl_only_flags_are_refused_when_the_flow_spotter_runs(flag, capfd):
    """Ignored, they ran the flow spotter with exit 0 (``--backend bogus``); realtime.bench and
    realtime.cam share make_spotter."""
    code, _, err = run_cam(capfd, "--source", str(shared_video(SOURCE)), "--headless", *flag)
    assert code == 2 and err == (f"error: {flag[0]} concerns the fgsl spotter "
                                 "(pass --weights, or --spotter fgsl --allow-untrained)\n"), err
    from realtime.bench import build_parser as bench_parser
    from realtime.spotters import make_spotter
    if flag[0] != "--no-cache":  # (a flag of realtime.cam only)
        with pytest.raises(UsageError, match=f"^{flag[0]} concerns the fgsl spotter"):
            make_spotter(bench_parser().parse_args(flag))


@pytest.mark.parametrize("flag", [["--subject", "s1"], ["--subjects-from", "gt.csv"]], ids=lambda flag: flag[0])
def test_csv_naming_flags_without_csv_are_refused(flag, capfd):
    """They name --csv's rows only; without --csv they were accepted and did nothing."""
    code, _, err = run_cam(capfd, "--source", str(shared_video(SOURCE)), "--headless", "--events", "e.jsonl", *flag)
    assert code == 2 and err == f"error: {flag[0]} names the rows of --csv; without --csv it would be ignored\n", err


@pytest.mark.parametrize("flag", ["--source", "--events", "--csv", "--save", "--weights", "--face-model"])
def test_an_empty_path_is_one_line(flag, capfd):
    """``--events "$OUT"`` with OUT unset: the run went on and wrote nothing (``--weights ''``
    ran the flow spotter, ``--face-model ''`` looked for the current folder)."""
    args = ["--source", str(shared_video(SOURCE)), "--headless"]
    args = [flag, ""] + (args[2:] if flag == "--source" else args)
    with pytest.raises(SystemExit) as exit_info:
        run_cam(capfd, *args)
    assert exit_info.value.code == 2
    assert capfd.readouterr().err == f"error: argument {flag}: empty value (an unset shell variable?)\n"



@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_full_disk_ends_the_run_with_one_line_and_the_console_keeps_the_events(tmp_path):
    video = shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4")
    run = cam_process("--source", str(video), "--headless", "--events", "/dev/full", cwd=tmp_path)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert err[-1] == "error: /dev/full: cannot write events any more (No space left on device)"
    assert "summary:" in err[-2] and "MICRO" in run.stdout  # the event that failed to write is on the console


@pytest.mark.parametrize("flag, value", [("--sensitivity", "0"), ("--sensitivity", "nan"), ("--sensitivity", "-2"),
                                         ("--sensitivity", "1e-300"), ("--sensitivity", "1e4"),
                                         ("--fps", "inf"), ("--fps", "1e-300"), ("--no-face-warning", "-1")])
def test_bad_numbers_are_usage_errors(flag, value, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", "x.mp4", "--headless", flag, value])
    assert exit_info.value.code == 2 and f"argument {flag}: must be" in capfd.readouterr().err


def test_no_face_warning_zero_never_warns(tmp_path, capfd):
    rng = np.random.default_rng(2)
    write_video(tmp_path / "noise.avi", rng.integers(0, 256, (30, 240, 320, 3), dtype=np.uint8), 30.0)
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "noise.avi"), "--headless", "--no-face-warning", "0")
    assert code == 2 and "no face found" in err and "warning: no face" not in err


def test_the_no_face_warning_comes_again_after_the_face_came_back(tmp_path, capfd):
    """Face, 1.5 s without, face again, 1.5 s without: one warning per absence, not one per run."""
    face = read_frames(shared_video(SOURCE))  # 72 frames, a face in each
    blank = [np.zeros_like(face[0])] * 45
    write_video(tmp_path / "away.avi", np.stack(face + blank + face + blank), 30.0)
    code, _, err = run_cam(capfd, "--source", str(tmp_path / "away.avi"), "--headless", "--no-face-warning", "1")
    assert code == 0, err
    assert err.count("warning: no face in view for 1 s") == 2, err


def test_help_states_each_default_once():
    text = " ".join(build_parser().format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "camera index (default 0 when no --source) --source" in text  # its own wording, nothing appended
    assert "faces tracked at once (default: 4)" in text and "(default: 1.0)" in text
    from realtime.bench import build_parser as bench_parser
    assert "seed of the synthetic set (default: 0)" in " ".join(bench_parser().format_help().split())  # 0 is not None


@pytest.mark.skipif(not sys.platform.startswith("linux") or Path("/dev/video0").exists(),
                    reason="camera 0 may exist here (a webcam attached, or not Linux where we cannot tell)")
def test_a_missing_camera_is_one_line_without_opencvs_noise(tmp_path):
    proc = cam_process("--device", "0", "--headless", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: camera 0: cannot open"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_untrained_weights_mark_every_event_line_and_the_summary(tmp_path, capfd):
    """README: with --allow-untrained every output line says the intervals are meaningless."""
    code, out, err = run_cam(capfd, "--source", str(shared_video(SOURCE)), "--headless", "--spotter", "fgsl",
                             "--allow-untrained", "--preset", "tiny", "--sensitivity", "1000",
                             "--events", str(tmp_path / "u.jsonl"))
    assert code == 0, err
    events = events_of(tmp_path / "u.jsonl")
    assert events and len(out) == len(events)  # (a sensitivity of 1000 makes random weights report)
    assert all("UNTRAINED WEIGHTS" in line for line in out) and all(e["untrained"] is True for e in events)
    assert "UNTRAINED WEIGHTS" in next(line for line in err.splitlines() if line.startswith("summary:"))


def test_a_file_too_short_to_spot_in_is_said(tmp_path, capfd):
    """A 10-frame clip (0.33 s): "0 events" would read as "nothing happened"; one warning line
    says nothing could be seen. The whole 2.4-s sample gets no such line."""
    clip = tmp_path / "short.avi"
    write_video(clip, np.stack(read_frames(SAMPLE_VIDEO)[:10])[..., ::-1], 30.0)
    code, _, err = run_cam(capfd, "--source", str(clip), "--headless")
    assert code == 0 and (f"warning: {clip}: 10 frames (0.33 s) is too short to spot in: a micro-expression "
                          "lasts up to 0.5 s") in err.splitlines(), err
    code, _, err = run_cam(capfd, "--source", str(SAMPLE_VIDEO), "--headless")
    assert code == 0 and "too short" not in err
