"""The Gradio demo without a browser: its HTTP API through ``gradio_client``, the live handler
fed real frames directly, and the per-session state's limits and release.

Videos are real faces: the bundled sample, and a still frame of it with injected
micro-expressions (``fgsl.data.synthetic``, as the CLI tests use) whose ground truth is known.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (the dev extra)")
gradio_client = pytest.importorskip("gradio_client", reason="the API tests need gradio_client (the dev extra)")

from demo.app import DemoApp, DemoConfig, build_parser, main  # noqa: E402
from demo.browser import synthetic_clip  # noqa: E402
from demo.session import (DemoError, LiveSession, PipelineFactory, SessionBusy, SessionRegistry,  # noqa: E402
                          Settings)
from demo.upload import TABLE_HEADERS, analyse_video  # noqa: E402
from fgsl.data.synthetic import write_video  # noqa: E402
from fgsl.evaluate import evaluate, read_intervals  # noqa: E402
from realtime.cam import DISCLAIMER  # noqa: E402
from realtime.types import validate_event_line  # noqa: E402

# Gradio's own table code trips pandas 3 deprecation notes; they are not the demo's.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "pyfeat_single_face.mp4"


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
    if shutil.which("ffprobe") is None:
        return Path(path).suffix == ".mp4"
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
    rows = read_rows(table)  # the sample's face talks and smiles: whatever it finds, well formed
    csv_path, jsonl_path = sorted(files, key=lambda f: Path(f).suffix)
    assert csv_path.endswith(".csv") and jsonl_path.endswith(".jsonl")
    with open(csv_path, newline="") as f:
        megc = list(csv.reader(f))
    assert megc[0] == ["subject", "video", "onset", "offset", "emotion"]
    events = event_lines(jsonl_path)
    assert len(events) == len(rows) and len(megc) - 1 == sum(e["kind"] == "micro" for e in events)


@pytest.mark.slow
def test_upload_still_face_with_injected_movements_finds_them(served, clip, tmp_path):
    _, client = served
    video, truth = clip
    summary, _, _, table, files = analyse(client, video)
    rows = read_rows(table)
    assert "240 frames" in summary and f"{len(rows)} events" in summary
    assert len(rows) >= 4 and all(r[0] == 0 and r[1] == "micro" for r in rows)
    csv_path = next(f for f in files if f.endswith(".csv"))
    events = event_lines(next(f for f in files if f.endswith(".jsonl")))
    assert [(e["onset"], e["offset"]) for e in events] == [(r[4], r[6]) for r in rows]
    # Score the MEGC CSV against the injected truth (the subject column is the video's name).
    subject = read_intervals(truth)[0].subject
    with open(csv_path, newline="") as f:
        pred = [row for row in csv.reader(f)]
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
    with pytest.raises(gradio_client.exceptions.AppError, match="less than minimum value 1"):
        analyse(client, noise, max_faces=0)  # Gradio's own slider check
    summary = analyse(client, SAMPLE)[0]  # after three errors the server still serves
    assert "72 frames" in summary


def test_fgsl_without_weights_is_explained(served, factory):
    app, client = served
    with pytest.raises(gradio_client.exceptions.AppError, match="fgsl"):  # not among the page's choices
        analyse(client, SAMPLE, spotter="fgsl")
    with pytest.raises(DemoError, match="needs trained weights.*--weights"):
        factory.pipeline(Settings("fgsl"))
    page = json.dumps(app._blocks.config)  # noqa: SLF001 (what the page renders)
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
    assert plot.ndim == 3 and Path(video).is_file() and read_rows({"headers": TABLE_HEADERS, "data": table}) == table
    assert all(Path(f).is_file() for f in files)
    out = app.live_step(frames_of(SAMPLE)[0], "fgsl", 1.0, 1, SimpleNamespace(session_hash="f"))
    assert "spotter fgsl (UNTRAINED weights)" in out
    app.registry.close_all()


def test_oversized_upload_is_refused_with_a_clear_message(factory, tmp_path):
    big = tmp_path / "long_recording.mp4"
    big.write_bytes(b"\0" * (2 * 2**20 + 1))
    with pytest.raises(DemoError, match=r"long_recording.mp4 is 2.0 MB; this server accepts videos up to 1 MB"):
        analyse_video(big, Settings(), factory, tmp_path / "out", max_bytes=2**20)
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
    assert "the server is busy: 1 live sessions" in busy
    assert "max faces must be 1 to 8" in app.live_step(frame, "flow", 1.0, 99, page_a)
    session = app.registry.peek("a")
    app.release(page_a)  # what demo.unload calls when the tab closes
    assert len(app.registry) == 0 and session.closed and app.registry.released == 1
    # A frame of the closed page still in flight must not start a new session for it.
    assert "this page was closed" in app.live_step(frame, "flow", 1.0, 4, page_a) and len(app.registry) == 0
    assert 'data-frame="0"' in app.live_step(frame, "flow", 1.0, 4, page_b)  # the slot is free again
    app.registry.close_all()


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
    with pytest.raises(SessionBusy, match="busy: 2 live sessions"):
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
    assert main(["--max-sessions", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --max-sessions must be at least 1"
    assert main(["--weights", "/nonexistent/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "/nonexistent/run" in err


@pytest.mark.slow
def test_python_m_demo_serves_on_localhost():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None, proc.stderr.read() if proc.poll() is not None else "no answer in 90 s"
        assert "<html" in page.lower()
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert DISCLAIMER in err
