"""The Gradio demo without a browser: its HTTP API through ``gradio_client``, the live handler
fed real frames directly, and the per-session state's limits and release.

Videos are real faces: the bundled sample, and a still frame of it with injected
micro-expressions (``fgsl.data.synthetic``, as the CLI tests use) whose ground truth is known.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (the dev extra)")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client (the dev extra)")

from demo import bench  # noqa: E402
from demo import browser as B  # noqa: E402
from demo.app import STILL_CLOSING, DemoApp, DemoConfig, build_parser, main  # noqa: E402
from demo.browser import synthetic_clip  # noqa: E402
from demo.session import (FGSL_NEEDS_WEIGHTS, DemoError, LiveSession, PipelineFactory, SessionBusy,  # noqa: E402
                          SessionRegistry, Settings)
from demo.upload import TABLE_HEADERS, analyse_video  # noqa: E402
from fgsl import cli  # noqa: E402
from fgsl.data.frames import VideoError  # noqa: E402
from fgsl.data.synthetic import write_video  # noqa: E402
from fgsl.evaluate import evaluate, read_intervals  # noqa: E402
from realtime.cam import DISCLAIMER  # noqa: E402
from realtime.types import validate_event_line  # noqa: E402
from tests.conftest import shared_video  # noqa: E402

# Gradio's own table code trips pandas 3 deprecation notes; they are not the demo's.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "pyfeat_single_face.mp4"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg is not installed (apt-get install ffmpeg; `make test` installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    """A still real face with 6 injected micro-expressions (240 frames, 30 fps) and its truth."""
    return synthetic_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def factory() -> PipelineFactory:
    return PipelineFactory()


@pytest.fixture(scope="module")
def served(factory, tmp_path_factory):
    app = DemoApp(factory, DemoConfig(max_upload_mb=50, max_sessions=2, work_dir=tmp_path_factory.mktemp("work")))
    demo = app.launch(port=free_port(), block=False, quiet=True)
    client = gradio_client.Client(demo.local_url, verbose=False)
    yield app, client
    app.close()


def analyse(client, path: Path, spotter: str = "flow", sensitivity: float = 1.0, max_faces: int = 4):
    return client.predict(gradio_client.handle_file(str(path)), spotter, sensitivity, max_faces, api_name="/analyse")


def read_rows(table) -> list[list]:
    assert table["headers"] == TABLE_HEADERS
    return table["data"]


def event_lines(path: str) -> list[dict]:
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    for line in lines:
        validate_event_line(line)
    return lines


def is_h264_mp4(path: str) -> bool:
    if shutil.which("ffprobe") is None:  # a suffix says nothing about the codec a browser needs
        pytest.fail("ffprobe is not installed, so the annotated video's codec cannot be checked "
                    "(apt-get install ffmpeg; `make test` installs it)")
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=codec_name",
                          "-of", "csv=p=0", path], capture_output=True, text=True, check=True).stdout
    return out.strip() == "h264"


# ---------------------------------------------------------------------- upload tab, over HTTP
@pytest.mark.slow
def test_upload_bundled_sample_gives_video_plot_table_and_files(served):
    _, client = served
    summary, video, plot, table, files = analyse(client, SAMPLE)
    assert "72 frames" in summary and "1 face track" in summary and "flow spotter" in summary
    assert is_h264_mp4(video)  # plays in a browser
    cap = cv2.VideoCapture(video)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 72
    cap.release()
    image = cv2.imread(plot)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 400
    rows = read_rows(table)
    csv_path, jsonl_path = sorted(files, key=lambda f: Path(f).suffix)
    assert csv_path.endswith(".csv") and jsonl_path.endswith(".jsonl")
    with open(csv_path, newline="") as f:
        megc = list(csv.reader(f))
    # No events on this sample (measured, not promised anywhere: the flow spotter finds none here
    # even at sensitivity 1000), so this test covers the video, the plot, and both files written
    # with only their header. Rows, JSONL lines and CSV rows are compared on the still face below.
    assert "**0 events**" in summary
    assert rows == [] and megc == [["subject", "video", "onset", "offset", "emotion"]]
    assert Path(jsonl_path).read_text() == ""


@pytest.mark.slow
def test_upload_still_face_with_injected_movements_finds_them(served, clip, tmp_path):
    _, client = served
    video, truth = clip
    summary, _, _, table, files = analyse(client, video)
    rows = read_rows(table)
    assert "240 frames" in summary and f"{len(rows)} events" in summary
    assert len(rows) >= 4 and all(r[0] == 0 and r[1] == "micro" for r in rows)
    assert all(len(r) == len(TABLE_HEADERS) for r in rows)
    csv_path = next(f for f in files if f.endswith(".csv"))
    events = event_lines(next(f for f in files if f.endswith(".jsonl")))  # every line validated
    # The table, the JSONL and the MEGC CSV list the same events: one row per line, in order, and
    # one CSV row per micro-expression (MEGC scores micro-expressions only).
    assert len(events) == len(rows)
    assert [(e["track"], e["kind"], e["onset"], e["apex"], e["offset"]) for e in events] == [
        (r[0], r[1], r[4], r[5], r[6]) for r in rows]
    with open(csv_path, newline="") as f:
        pred = [row for row in csv.reader(f)]
    assert pred[0] == ["subject", "video", "onset", "offset", "emotion"]
    micro = [e for e in events if e["kind"] == "micro"]
    assert [(int(r[2]), int(r[3]), r[4]) for r in pred[1:]] == [(e["onset"], e["offset"], e["label"]) for e in micro]
    # Score the MEGC CSV against the injected truth (the subject column is the video's name).
    subject = read_intervals(truth)[0].subject
    with open(tmp_path / "pred.csv", "w", newline="") as f:
        csv.writer(f).writerows([pred[0]] + [[subject] + row[1:] for row in pred[1:]])
    result = evaluate(read_intervals(truth), read_intervals(tmp_path / "pred.csv"), mode="strict")
    assert result["spotting"]["f1"] >= 0.75, result["spotting"]  # measured 0.91 (5 of 6, no false alarm)


def test_not_a_video_is_a_clear_message_and_the_server_keeps_serving(served, tmp_path):
    _, client = served
    bad = tmp_path / "holiday.mp4"
    bad.write_text("this is a text file with a video's name\n" * 50)
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        analyse(client, bad)
    message = str(err.value)
    assert "holiday.mp4 is not a video" in message and "Traceback" not in message
    noise = tmp_path / "noise.avi"
    write_video(noise, np.random.default_rng(1).integers(0, 256, (30, 160, 200, 3), dtype=np.uint8), 30.0)
    with pytest.raises(gradio_client.exceptions.AppError, match="no face found in the 30 frames of noise.avi"):
        analyse(client, noise)
    summary = analyse(client, SAMPLE)[0]  # after two errors the server still serves
    assert "72 frames" in summary and "Warning" not in summary  # a whole file: no truncation warning


def test_a_face_count_that_is_not_whole_is_refused_not_rounded(served, factory, tmp_path):
    """Gradio's slider lets 2.5 through (its step is not checked); int() used to make it 2."""
    _, client = served
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        analyse(client, SAMPLE, max_faces=2.5)
    assert str(err.value).endswith("max faces must be a whole number from 1 to 8, got 2.5")
    for bad in (2.5, "2.5", float("nan"), True, 9, 0):
        with pytest.raises(DemoError, match=r"max faces must be a whole number from 1 to 8, got "):
            Settings.from_controls("flow", 1.0, bad)
    assert Settings.from_controls("flow", 1.0, 3.0).max_faces == 3 == Settings.from_controls("flow", 1, "3").max_faces
    app = DemoApp(factory, DemoConfig(work_dir=tmp_path))
    frame = np.full((120, 160, 3), 128, np.uint8)
    assert "max faces must be a whole number from 1 to 8, got 2.5" in app.live_step(
        frame, "flow", 1.0, 2.5, SimpleNamespace(session_hash="p"))
    assert len(app.registry) == 0


@pytest.mark.parametrize("sensitivity, max_faces, message", [
    (100, 4, "sensitivity must be a number from 0.25 to 4, got 100"),
    (0, 4, "sensitivity must be a number from 0.25 to 4, got 0"),
    (-1, 4, "sensitivity must be a number from 0.25 to 4, got -1"),
    ("abc", 4, "sensitivity must be a number from 0.25 to 4, got 'abc'"),
    (None, 4, "sensitivity must be a number from 0.25 to 4, got None"),
    (1, 0, "max faces must be a whole number from 1 to 8, got 0"),
    (1, 9, "max faces must be a whole number from 1 to 8, got 9"),
    (1, None, "max faces must be a whole number from 1 to 8, got None"),
])
def test_controls_out_of_the_sliders_range_through_the_api_are_one_line(served, sensitivity, max_faces, message,
                                                                        capfd):
    """The sliders' own check answered in Gradio's words (``Value 100 is greater than maximum
    value 4.0``) with a traceback in the server's log."""
    _, client = served
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        analyse(client, SAMPLE, sensitivity=sensitivity, max_faces=max_faces)
    assert str(err.value).endswith(message)
    log = capfd.readouterr().err
    assert f"demo: {message}" in log and "Traceback" not in log


@needs_ffmpeg
def test_a_truncated_upload_says_where_decoding_stopped(served, tmp_path):
    """A cut-off download decodes partly: the summary says so, in the words realtime.cam warns
    with, instead of presenting it as a shorter video."""
    _, client = served
    whole = tmp_path / "whole.mp4"  # the sample with its index first, so that its first half decodes
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE), "-c", "copy", "-movflags", "+faststart",
                    str(whole)], check=True, capture_output=True)
    cut = tmp_path / "cut_short.mp4"
    cut.write_bytes(whole.read_bytes()[:110_000])  # `head -c 110000`: 32 of its 72 frames decode
    # The server's log says it too (the reader's warning, naming the server's copy of the upload).
    with pytest.warns(UserWarning, match=r"/cut_short\.mp4: decoding stopped at frame 32 of 72 \(damaged"):
        summary = analyse(client, cut)[0]
    assert summary.startswith("**Warning: cut_short.mp4: decoding stopped at frame 32 of 72 (damaged or truncated "
                              "file).**"), summary
    assert "in 32 frames" in summary


def test_a_variable_frame_rate_upload_is_said_so_and_not_called_cut_short(factory, tmp_path):
    """A phone's variable frame rate (the sample's second half at 10 fps): its header count is
    duration x rate, so a count of its own said "decoding stopped" of a healthy file. The summary
    says what the reader found, as realtime.cam warns it."""
    uneven = tmp_path / "phone.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE), "-vf",
                    "setpts='if(lt(N,36),N/30/TB,(36/30+(N-36)/10)/TB)'", "-fps_mode", "vfr", "-c:v", "libx264",
                    str(uneven)], check=True, capture_output=True)
    with pytest.warns(UserWarning, match="its own frame times drift"):
        result = analyse_video(uneven, Settings(), factory, tmp_path / "out")
    assert len(result.warnings) == 1 and result.warnings[0].startswith(
        "phone.mkv: its own frame times drift from frame / 30 fps (frame 38 is at 1.40 s, not 1.27 s"), result.warnings
    assert "decoding stopped" not in result.summary and result.frames == 72


def test_fgsl_without_weights_is_explained(served, factory):
    """The page offers only the flow spotter; an API caller asking for fgsl gets the reason (the
    line docs/demo.md shows), not Gradio's "Value: fgsl is not in the list of choices"."""
    app, client = served
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        analyse(client, SAMPLE, spotter="fgsl")
    assert str(err.value).endswith(FGSL_NEEDS_WEIGHTS) and "list of choices" not in str(err.value)
    assert FGSL_NEEDS_WEIGHTS in (ROOT / "docs" / "demo.md").read_text()
    with pytest.raises(gradio_client.exceptions.AppError, match=r"unknown spotter 'bogus' \(choose one of flow\)"):
        analyse(client, SAMPLE, spotter="bogus")
    assert FGSL_NEEDS_WEIGHTS in app.live_step(np.full((120, 160, 3), 128, np.uint8), "fgsl", 1.0, 4,
                                               SimpleNamespace(session_hash="w"))
    with pytest.raises(DemoError, match="needs trained weights.*--weights"):
        factory.pipeline(Settings("fgsl"))
    config = app._blocks.config  # noqa: SLF001 (what the page renders)
    control = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "spotter")
    assert control["type"] == "dropdown" and [list(c) for c in control["props"]["choices"]] == [["flow", "flow"]]
    assert not control["props"]["allow_custom_value"]  # the page itself offers (and takes) only flow
    page = json.dumps(config)
    assert "not a lie detector" in page and DISCLAIMER.split(": ", 1)[1] in page
    assert "FGSL spotter needs trained weights" in page


@pytest.mark.slow
def test_fgsl_spotter_is_offered_with_an_engine_and_says_untrained(tmp_path):
    """The FGSL wiring, on the tiny preset with random weights (what --allow-untrained allows)."""
    factory = PipelineFactory(allow_untrained=True, preset="tiny")
    assert factory.spotters == ("flow", "fgsl")
    app = DemoApp(factory, DemoConfig(work_dir=tmp_path))
    page = json.dumps(app.blocks().config)
    assert "UNTRAINED" in page and "not a lie detector" in page
    summary, video, plot, table, files = app.analyse(str(SAMPLE), "fgsl", 1.0, 1)
    assert summary.startswith("**UNTRAINED FGSL weights") and "fgsl spotter" in summary and "72 frames" in summary
    assert plot.ndim == 3 and Path(video).is_file() and all(Path(f).is_file() for f in files)
    # Untrained heads score about their prior, 0.01 (fgsl/heads.py), far below the 0.3 threshold.
    assert table == [] and "**0 events**" in summary
    # Sensitivity 1000 (beyond the page's range, so not through it) divides the threshold's odds by
    # 1000 (0.3 -> 0.0004): now the prior reports.
    result = analyse_video(SAMPLE, Settings("fgsl", 1000.0, 1), factory, tmp_path / "sensitive")
    summary, table = result.summary, result.rows
    lines = event_lines(str(result.jsonl))
    assert lines and all(line["untrained"] is True for line in lines)  # as realtime.cam --events marks them
    assert f"**{len(table)} events**" in summary and all(len(r) == len(TABLE_HEADERS) for r in table)
    assert [(r[0], r[1], r[4], r[6]) for r in table] == [(e["track"], e["kind"], e["onset"], e["offset"]) for e in lines]
    out = app.live_step(frames_of(SAMPLE)[0], "fgsl", 1.0, 1, SimpleNamespace(session_hash="f"))
    assert "spotter fgsl (UNTRAINED weights)" in out
    app.registry.close_all()


def test_the_page_escapes_the_weights_folder_it_names(tmp_path):
    """The spotter note names the weights folder: a folder name is text on the page, not HTML."""
    from fgsl import weights
    from fgsl.config import preset
    from fgsl.model import build

    folder = tmp_path / "run<img src=x onerror=alert(1)>"
    weights.save(build(preset("tiny"), seed=0), folder, trained=False)
    app = DemoApp(PipelineFactory(weights=folder, allow_untrained=True), DemoConfig(work_dir=tmp_path / "work"))
    page = json.dumps(app.blocks().config)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "demo-untrained" in page  # the untrained marking itself is still HTML


def test_an_upload_stops_when_its_page_is_closed(factory, clip, tmp_path, monkeypatch):
    """Gradio cannot stop the thread an upload runs in, and uploads run one at a time: an upload
    whose tab was closed used to hold the slot until its last frame. ``demo.unload`` (the tab
    closed) now stops it at the next frame, its files removed and its reader and MediaPipe closed."""
    import gradio as gr

    from realtime.face import FaceTracker

    closed_trackers: list[FaceTracker] = []
    real_close = FaceTracker.close
    monkeypatch.setattr(FaceTracker, "close", lambda self: closed_trackers.append(self) or real_close(self))
    app = DemoApp(factory, DemoConfig(work_dir=tmp_path))
    page = SimpleNamespace(session_hash="tab")
    seen: list[str] = []

    def progress(fraction: float, desc: str) -> None:
        seen.append(desc)
        if desc.startswith("frame 20 "):
            app.release(page)  # what demo.unload calls when the tab closes

    with pytest.raises(gr.Error) as err:
        app.analyse(str(clip[0]), "flow", 1.0, 4, progress, page)
    assert err.value.message == (f"{clip[0].name}: analysis stopped at frame 20 of ~240: its page was closed")
    assert not seen[-1].startswith("frame 30")
    assert list(tmp_path.glob("run-*")) == []  # its folder is gone
    assert closed_trackers and closed_trackers[-1]._landmarker is None  # noqa: SLF001 (MediaPipe released)
    summary = app.analyse(str(SAMPLE), "flow", 1.0, 4, None, SimpleNamespace(session_hash="other"))[0]
    assert "72 frames" in summary  # other pages still analyse


def test_a_video_too_short_to_spot_in_says_so(factory, tmp_path):
    """10 frames of the sample (0.33 s), and a still image given a video's name (OpenCV reads
    it as one frame): "0 events" would read as "nothing happened"; the summary says why nothing
    could be seen. The whole 2.4-s sample says nothing of the kind."""
    cap = cv2.VideoCapture(str(SAMPLE))
    frames = np.stack([cap.read()[1] for _ in range(10)])[..., ::-1]  # (write_video takes RGB)
    cap.release()
    clip = tmp_path / "short.avi"
    write_video(clip, frames, 30.0)
    result = analyse_video(clip, Settings(), factory, tmp_path / "short")
    assert result.warnings == ["short.avi: 10 frames (0.33 s) is too short to spot in: a micro-expression lasts up to 0.5 s"]
    assert result.summary.startswith(f"**Warning: {result.warnings[0]}.**")
    image = tmp_path / "image.mp4"
    image.write_bytes(cv2.imencode(".png", frames[0][..., ::-1])[1].tobytes())
    result = analyse_video(image, Settings(), factory, tmp_path / "image")
    assert result.frames == 1 and result.warnings[0].startswith("image.mp4: 1 frame (")
    assert analyse_video(SAMPLE, Settings(), factory, tmp_path / "whole").warnings == []
    png = tmp_path / "frame.png"  # an image by its name: refused, without the command line's advice
    png.write_bytes(image.read_bytes())
    with pytest.raises(DemoError) as refused:
        analyse_video(png, Settings(), factory, tmp_path / "png")
    assert refused.value.args[0] == ("frame.png is not a video this demo can read (an image, not a video); try an "
                                     ".mp4, .avi, .mov or .webm file")


def test_oversized_upload_is_refused_with_a_clear_message(factory, tmp_path):
    big = tmp_path / "long_recording.mp4"
    big.write_bytes(b"\0" * (2 * 2**20 + 1))
    with pytest.raises(DemoError, match=r"long_recording.mp4 is 2.0 MB; this server accepts videos up to 1 MB"):
        analyse_video(big, Settings(), factory, tmp_path / "out", max_bytes=2**20)
    with pytest.raises(DemoError, match=r"accepts videos up to 0.4 MB"):  # (it said "up to 0 MB")
        analyse_video(big, Settings(), factory, tmp_path / "out", max_bytes=int(0.4 * 2**20))
    app = DemoApp(factory, DemoConfig(max_upload_mb=0.1, work_dir=tmp_path / "work"))
    demo = app.launch(port=free_port(), block=False, quiet=True)
    try:
        client = gradio_client.Client(demo.local_url, verbose=False)
        with pytest.raises(ValueError, match="exceeds the maximum file size"):
            analyse(client, SAMPLE)  # 208 kB > 0.1 MB: refused before it is sent
    finally:
        app.close()


# ---------------------------------------------------------------------- live tab, handler level
def frames_of(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))  # Gradio hands the handler RGB
    cap.release()
    return out


def test_the_live_rate_waits_for_a_second_of_frames(factory, clip):
    """Three frames 28 ms apart (a browser's send jitter) read as 35 frames/s from a page that
    sends at most 25: no rate is given until the arrivals span a second."""
    frames = frames_of(clip[0])
    session = LiveSession(Settings(), factory.pipeline(Settings()))
    try:
        steps = [session.step(frames[i], received=100.0 + i * 0.028) for i in range(3)]
        assert session.fps() is None and all(step.fps is None for step in steps)
        for i in range(3, 40):
            session.step(frames[i % len(frames)], received=100.0 + 0.056 + (i - 2) / 25)
        assert session.fps() == pytest.approx(25, abs=1.5)
    finally:
        session.close()


@pytest.mark.slow
def test_live_session_spots_injected_movements_and_stays_bounded(factory, clip):
    frames = frames_of(clip[0])
    settings = Settings()
    session = LiveSession(settings, factory.pipeline(settings), max_events=3, signal_s=2.0)
    # Two loops of the clip at a webcam's pace (stream time from the arrival times).
    for i in range(2 * len(frames)):
        step = session.step(frames[i % len(frames)], received=100.0 + i / 30)
        assert step.image_bgr.shape == frames[0].shape
    assert session.pipeline.event_count >= 8  # 5 of 6 per loop were measured
    assert len(session.events) == 3  # only the newest are kept for the page
    assert len(session.frame_times) <= 2.0 * 60 and len(session.signals) <= 2.0 * 60
    assert session.signals.series() and abs(session.fps() - 30) < 1
    session.close()
    assert session.pipeline.tracker._landmarker is None  # noqa: SLF001 (MediaPipe released)
    with pytest.raises(DemoError, match="closed"):
        session.step(frames[0])


def test_live_handler_returns_annotated_frame_and_release_frees_the_session(factory, clip, tmp_path):
    app = DemoApp(factory, DemoConfig(max_sessions=1, work_dir=tmp_path))
    page_a, page_b = SimpleNamespace(session_hash="a"), SimpleNamespace(session_hash="b")
    frame = frames_of(clip[0])[0]
    out = app.live_step(frame, "flow", 1.0, 4, page_a)
    assert 'class="live-frame" data-frame="0"' in out and "data:image/jpeg;base64," in out
    assert "1 face(s)" in out and "frames/s reach the server" in out
    assert "waiting for the webcam" in app.live_step(None, "flow", 1.0, 4, page_a)
    busy = app.live_step(frame, "flow", 1.0, 4, page_b)  # one slot, taken by page a
    assert "the server is busy: 1 live session already runs (the limit, --max-sessions)" in busy
    assert "max faces must be a whole number from 1 to 8" in app.live_step(frame, "flow", 1.0, 99, page_a)
    session = app.registry.peek("a")
    app.live_stopped(page_a)  # what the end of page a's stream (Stop) calls
    assert len(app.registry) == 0 and session.closed and app.registry.released == 1
    # A frame page a sent just before Stop, handled just after it, starts no session (it would
    # hold the slot until the idle timeout).
    assert "just stopped" in app.live_step(frame, "flow", 1.0, 4, page_a) and len(app.registry) == 0
    assert 'data-frame="0"' in app.live_step(frame, "flow", 1.0, 4, page_b)  # the slot is free at once
    app.registry.stop_grace_s = 0.0  # (later: Record again on page a)
    assert "busy" in app.live_step(frame, "flow", 1.0, 4, page_a)  # a new session, if a slot is free
    app.live_stopped(page_b)
    assert 'data-frame="0"' in app.live_step(frame, "flow", 1.0, 4, page_a)  # (a fresh one: frame 0)
    session = app.registry.peek("a")
    app.release(page_a)  # what demo.unload calls when the tab closes
    assert len(app.registry) == 0 and session.closed and app.registry.released == 3
    # A frame of the closed page still in flight must not start a new session for it.
    assert "this page was closed" in app.live_step(frame, "flow", 1.0, 4, page_a) and len(app.registry) == 0
    assert 'data-frame="0"' in app.live_step(frame, "flow", 1.0, 4, page_b)  # the slot is free again
    app.registry.close_all()


@pytest.mark.slow
def test_events_the_finish_flushes_reach_the_live_table_and_new_controls_keep_the_stream(factory, clip, tmp_path):
    """The last moments of a stream: the movements at frames 41-46 and 64-66 of the clip are confirmed by the
    flow spotter's look-ahead only at frames 87 and 103; a stream that ends at frame 80 gets them from the
    pipeline's finish, which Stop, new controls and the idle reaper all call. It used to be
    dropped: the table kept 0 rows (and new controls wiped it and restarted the frame count)."""
    app = DemoApp(factory, DemoConfig(max_sessions=2, idle_s=60, work_dir=tmp_path))
    frames = frames_of(clip[0])[:80]
    now = [len(frames) / 30]  # the registry's clock: stream time (the frames arrive at 30 fps)
    app.registry.clock = lambda: now[0]

    def stream(page: str, settings: Settings):
        session = app.registry.get(page, settings)
        for i, frame in enumerate(frames):
            session.step(frame, received=i / 30)
        return session

    def table(page: str) -> list[tuple[int, int]]:
        rows = app.live_panels(SimpleNamespace(session_hash=page))[1]
        return [(r[4], r[6]) for r in rows]

    finished = [(64, 66), (41, 46), (18, 24)]  # newest first
    session = stream("stop", Settings())
    assert table("stop") == [(18, 24)]
    app.live_stopped(SimpleNamespace(session_hash="stop"))  # Stop
    assert session.closed and table("stop") == finished
    # New controls mid-stream: the finished events stay and the frame count carries on.
    session = stream("controls", Settings())
    changed = app.registry.get("controls", Settings(sensitivity=1.05))
    assert session.closed and changed is not session and not changed.closed
    assert table("controls") == finished
    assert changed.step(frames[0], received=now[0]).index == 80
    assert changed.pipeline.tracker.live_tracks == [1]  # the face's new track is not "track 0" again
    # The idle reaper keeps the page's final table; Clear forgets it.
    stream("idle", Settings())
    now[0] += 61
    assert app.registry.reap() == 2 and table("idle") == finished
    assert app.live_clear(SimpleNamespace(session_hash="idle"))[2] == [] and app.registry.view("idle") is None
    app.release(SimpleNamespace(session_hash="stop"))  # the tab closed: nothing is left for it
    assert app.registry.view("stop") is None
    app.registry.close_all()


def test_the_live_stream_is_not_queued_behind_other_pages_and_stop_frees_its_slot(factory, tmp_path):
    """A Gradio stream holds its concurrency slot until it stops, so a limit on the stream event
    parked the page over --max-sessions silently in the queue: the registry alone limits."""
    app = DemoApp(factory, DemoConfig(max_sessions=1, work_dir=tmp_path))
    blocks = app.blocks()
    live = next(d for d in blocks.config["dependencies"] if d["api_name"] == "live_step")
    assert blocks.fns[live["id"]].concurrency_limit is None
    after = [blocks.fns[d["id"]].fn for d in blocks.config["dependencies"] if d.get("trigger_after") == live["id"]]
    assert after == [app.live_stopped]  # Stop ends the stream: the slot is freed


def test_the_live_stream_is_no_api_so_a_client_call_holds_no_live_slot(served):
    """One gradio_client call to /live_step started a session that nothing (no Stop, no unload)
    ended before --idle-timeout: with --max-sessions 1 every page was told the server was busy."""
    app, client = served
    with pytest.raises(ValueError, match="live_step"):
        client.predict(None, "flow", 1.0, 4, api_name="/live_step")
    assert len(app.registry) == 0
    assert "/live_step" not in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/analyse" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_registry_limits_recreates_on_new_controls_and_reaps_idle_sessions(factory):
    now = [0.0]
    made: list[LiveSession] = []

    def new(settings: Settings) -> LiveSession:
        made.append(LiveSession(settings, factory.pipeline(settings), clock=lambda: now[0]))
        return made[-1]

    registry = SessionRegistry(new, max_sessions=2, idle_s=60, clock=lambda: now[0])
    a = registry.get("a", Settings())
    assert registry.get("a", Settings()) is a
    registry.get("b", Settings())
    with pytest.raises(SessionBusy, match="busy: 2 live sessions already run"):
        registry.get("c", Settings())
    a2 = registry.get("a", Settings(sensitivity=2.0))  # new controls: a fresh pipeline
    assert a2 is not a and a.closed and a2.pipeline.spotter.sensitivity == 2.0
    now[0] = 61.0
    assert registry.reap() == 2 and len(registry) == 0
    assert all(s.closed for s in made) and registry.released == 3
    registry.get("c", Settings())
    registry.close_all()
    assert len(registry) == 0 and all(s.closed for s in made)


# ---------------------------------------------------------------------- command line
def test_command_line_flags_and_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--share" in capsys.readouterr().out
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share, args.weights) == ("127.0.0.1", 7860, False, None)
    with pytest.raises(SystemExit) as exit_info:
        main(["--max-sessions", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("error: argument --max-sessions: must be at least 1, got '0'")
    assert main(["--weights", "/nonexistent/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "/nonexistent/run" in err


@pytest.mark.parametrize("flag", [["--backend", "bogus"], ["--engine-device", "cuda:7"], ["--preset", "tiny"]],
                         ids=lambda flag: flag[0])
def test_fgsl_only_flags_without_an_fgsl_engine_are_refused(flag, capsys, monkeypatch):
    """Without --weights (or --allow-untrained) the demo has only the flow spotter, which would
    ignore them: refused before anything loads (the server used to start)."""
    import demo.app

    monkeypatch.setattr(demo.app, "make_app", lambda args: pytest.fail("the demo started"))
    assert main(flag) == 2
    assert capsys.readouterr().err == (f"error: {flag[0]} concerns the fgsl spotter, which needs --weights "
                                       "(or --allow-untrained)\n")


@pytest.mark.parametrize("port, why", [("-1", "must be at least 0, got '-1'"),
                                       ("65536", "must be at most 65535, got '65536'")])
def test_a_port_out_of_range_names_the_port_not_the_host(port, why, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", port])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: argument --port: {why}"


def _ephemeral_ports() -> tuple[int, int]:
    """The range the OS assigns free ports from (Linux's, else the whole unprivileged range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 1024, 65535


@pytest.mark.slow
@pytest.mark.parametrize("stop, times", [("SIGINT", 1), ("SIGTERM", 1), ("SIGINT", 3)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-thrice"])
def test_python_m_demo_serves_on_localhost_on_the_port_the_os_picks_for_port_0_and_ctrl_c_ends_it(stop, times):
    """``--port 0`` is a port the OS assigns (not Gradio's first free one from 7860), and the
    address printed is the one that serves. Ctrl-C (SIGINT; SIGTERM alike) is how a server ends:
    one line of ours, status 0, not Gradio's "Keyboard interruption in main thread" (nor, for
    SIGTERM, Python's death on the spot with status -15). Ctrl-C pressed thrice, 50 ms apart,
    waits for the closing (it stopped it: "interrupted", status 130, sessions left open)."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "demo", "--port", "0"], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        found = None
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                found = re.search(r"Running on local URL:\s*(http://127\.0\.0\.1:(\d+))", lines.get(timeout=0.5))
            except queue.Empty:
                pass
        assert found is not None, proc.stderr.read() if proc.poll() is not None else "no address in 90 s"
        url, port = found.group(1), int(found.group(2))
        low, high = _ephemeral_ports()
        assert low <= port <= high, f"port {port} is not one the OS assigns ({low}-{high})"
        page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert "<html" in page.lower()
        for _ in range(times):
            proc.send_signal(getattr(signal, stop))
            time.sleep(0.05)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    seen = []
    while not lines.empty():
        seen.append(lines.get())
    assert not any("launch()" in line for line in seen), seen  # Gradio's advice to Python callers
    assert not any("Keyboard interruption" in line or "Closing server" in line for line in seen), seen
    assert proc.returncode == 0, err[-2000:]
    assert DISCLAIMER in err and err.strip().splitlines()[-1] == "server stopped", err[-2000:]
    assert err.count(STILL_CLOSING) <= (times > 1), err[-2000:]  # said at most once, for the later Ctrl-Cs
    assert "Traceback" not in err and "interrupted" not in err



@pytest.mark.parametrize("module", ["demo", "demo.app"])
def test_python_m_demo_refuses_a_taken_port_and_a_bad_host_in_its_own_words(module):
    """Gradio's messages name its Python arguments and environment variables; ours the flags.
    Both are refused before the app (and MediaPipe) loads. ``python -m demo.app`` is the same
    command (it once printed nothing and ended)."""
    import socket

    def demo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = demo("--port", str(port))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: cannot serve on 127.0.0.1:{port}: Address already in use (another --port, or --port 0 for one "
        "the OS has free)"]
    done = demo("--host", "256.1.1.1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: --host 256.1.1.1: ") and "launch()" not in done.stderr
    done = demo("--host", "::1")  # Gradio's start-up check raised httpx.InvalidURL (a traceback)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: --host ::1: an IPv6 address, which Gradio cannot serve on (its start-up check builds no valid URL of "
        "it); give an IPv4 address (127.0.0.1, 0.0.0.0) or a host name"]
    done = demo("--max-upload-mb", "1e308")  # int(1e308 * 2**20): OverflowError
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: argument --max-upload-mb: must be from 0.01 to 1e+06, got '1e308'"]

def test_launch_port_0_serves_on_a_free_port_and_says_where(factory, tmp_path):
    app = DemoApp(factory, DemoConfig(work_dir=tmp_path))
    demo = app.launch(port=0, block=False, quiet=True)
    try:
        port = int(re.fullmatch(r"http://127\.0\.0\.1:(\d+)/?", demo.local_url).group(1))
        assert port != 0 and demo.server_port == port
        assert "<html" in urllib.request.urlopen(demo.local_url, timeout=10).read().decode().lower()
    finally:
        app.close()


#: ``python -c`` body: run ``python -m demo`` with the module named in argv[1] unimportable, as
#: on a core install without the ``[demo]`` extra (nothing is uninstalled).
WITHOUT_MODULE = """
import runpy, sys
blocked = sys.argv[1]
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["demo"]
runpy.run_module("demo", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module", ["gradio", "matplotlib"])
def test_python_m_demo_without_the_demo_extra_is_one_error_line(module):
    project = (ROOT / "pyproject.toml").read_text()
    name = re.search(r'^name = "([^"]+)"', project, re.M).group(1)
    extra = re.search(r"^demo = \[(.*)\]", project, re.M).group(1)
    assert f'"{module}' in extra  # the [demo] extra is what brings it
    out = subprocess.run([sys.executable, "-c", WITHOUT_MODULE, module], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert (out.returncode, out.stderr.strip()) == (2, f"error: the demo needs {module}: pip install '{name}[demo]'")
    assert out.stdout == ""


@pytest.mark.parametrize("module", ["playwright", "gradio"])
def test_demo_bench_without_its_packages_is_one_error_line(module):
    script = WITHOUT_MODULE.replace('sys.argv = ["demo"]', 'sys.argv = ["demo.bench", "--seconds", "1"]').replace(
        'run_module("demo"', 'run_module("demo.bench"')
    out = subprocess.run([sys.executable, "-c", script, module], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stderr.strip()) == (2, f"error: the benchmark needs {module}: {bench.INSTALL_HINT}")


# ---------------------------------------------------------------------- the fake camera's clip
def first_luma(y4m: Path) -> np.ndarray:
    """The first frame's Y plane of a ``.y4m`` (after checking it is 4:2:0, as chromium needs)."""
    with open(y4m, "rb") as f:
        header = f.readline().split()
        assert header[0] == b"YUV4MPEG2"
        fields = {field[:1]: field[1:] for field in header[1:]}
        assert fields.get(b"C", b"420").startswith(b"420")
        width, height = int(fields[b"W"]), int(fields[b"H"])
        assert f.readline().startswith(b"FRAME")
        return np.frombuffer(f.read(width * height), np.uint8).reshape(height, width)


def picture_box(luma: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of what is not the grey canvas (the corner's value)."""
    differs = np.abs(luma.astype(int) - int(luma[0, 0])) > 3
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@needs_ffmpeg
def test_any_real_video_fits_the_fake_camera_keeping_its_aspect_ratio(clip, tmp_path):
    """The bundled sample (640x360) and a portrait video (720x1280) are larger than 224x168 (the
    old 2x scale could not pad them to 448x336): scaled down to fit, aspect kept, centred. The
    synthetic clip's 128x128 face stays at 2x (256x256), the picture the browser tests use."""
    cam_w, cam_h = B.CAMERA_SIZE
    for video, (w, h) in ((SAMPLE, (640, 360)), (shared_video("liveportrait_d13_talking_portrait.mp4"), (720, 1280)),
                          (clip[0], (128, 128))):
        out = B.make_y4m(video, tmp_path / f"{video.stem}.y4m", max_seconds=0.5)
        luma = first_luma(out)
        assert luma.shape == (cam_h, cam_w), video
        scale = min(B.CAMERA_UPSCALE, cam_w / w, cam_h / h)
        top, bottom, left, right = picture_box(luma)
        assert abs((right - left) - w * scale) <= 2 and abs((bottom - top) - h * scale) <= 2, (video, luma.shape,
                                                                                             (top, bottom, left, right))
        assert abs((left + right) - cam_w) <= 2 and abs((top + bottom) - cam_h) <= 2, video  # centred
    with open(out, "rb") as f:
        header = len(f.readline())
    assert (out.stat().st_size - header) / (len(b"FRAME\n") + cam_w * cam_h * 3 // 2) == 15  # 0.5 s at 30 fps


@needs_ffmpeg
def test_fake_camera_clip_from_a_missing_or_broken_file_is_a_user_error(tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        B.make_y4m(tmp_path / "nope.mp4", tmp_path / "camera.y4m")
    assert cli.error_line(missing.value) == f"{tmp_path / 'nope.mp4'}: No such file or directory"
    bad = tmp_path / "holiday.mp4"
    bad.write_text("not a video\n" * 10)
    with pytest.raises(VideoError, match=r"holiday\.mp4 is not a video ffmpeg can turn into the fake camera's clip "
                                         r"\(.+\)") as broken:
        B.make_y4m(bad, tmp_path / "camera.y4m")
    assert "\n" not in str(broken.value) and " @ 0x" not in str(broken.value)
    assert isinstance(broken.value, cli.USER_ERRORS) and isinstance(missing.value, cli.USER_ERRORS)


# ---------------------------------------------------------------------- python -m demo.bench
@pytest.mark.parametrize("video, reason", [("/nonexistent/clip.mp4", "No such file or directory"),
                                           ("samples", "Is a directory")])
def test_bench_with_an_unreadable_video_is_one_error_line(video, reason):
    out = subprocess.run([sys.executable, "-m", "demo.bench", "--video", video, "--seconds", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stderr.strip()) == (2, f"error: {video}: {reason}")


def test_bench_help_shows_defaults_and_the_doc_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--seconds", "20.0"), ("--warmup", "4.0"), ("--sessions", "1")):
        assert re.search(rf"{flag} {flag.strip('-').upper()} [^-]*\(default: {re.escape(default)}\)", help_text), flag
    assert "--video VIDEO" in help_text and "(default: None)" not in help_text and "(default: False)" not in help_text

    doc = (ROOT / "docs" / "demo.md").read_text()
    usage = re.search(r"^python -m demo\.bench (.*?)\s+#", doc, re.M).group(1)
    shown = dict(re.findall(r"\[(--[a-z-]+)(?: ([^\]]+))?\]", usage))
    for action in bench.build_parser()._actions:
        flag = action.option_strings[-1] if action.option_strings else None
        if flag in (None, "--help"):
            continue
        assert flag in shown, f"docs/demo.md does not list {flag}"
        if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
            assert float(shown[flag]) == action.default, f"docs/demo.md shows {flag} {shown[flag]}, the default is " \
                                                         f"{action.default}"


def test_a_long_plot_title_is_wrapped_inside_the_figure():
    """The upload tab's title names the file; on one line a long name pushed both ends out of
    the 900 px figure. Wrapped, no title text touches the figure's left or right edge."""
    from demo.plots import signal_plot

    title = ("liveportrait_d18_d19_two_faces_sidebyside_recorded_in_the_lab.mp4: motion signal per face; dashed: "
             "threshold; shaded: spotted (red micro, grey macro)")
    image = signal_plot({0: (np.linspace(0, 5, 150), np.zeros(150))}, [], threshold=3.0, title=title)
    band = image[:36].astype(int).sum(axis=2)  # the title's rows (white background: 765)
    assert (band < 600).any(), "no title drawn"
    assert (band[:, :8] > 700).all() and (band[:, -8:] > 700).all()
