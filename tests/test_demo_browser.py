"""The demo in a real browser: Debian's chromium driven by Playwright, webcam faked from a clip.

The fake camera plays a still real face with injected micro-expressions (``demo.browser``;
facts in ``/work/shared/notes/browser-webcam-testing.md``). Screenshots of each tab go to
``test-artifacts/`` (git-ignored) for people to look at.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (the dev extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the dev extra)")

from demo import browser as B  # noqa: E402
from demo.app import CAMERA_ERRORS, DemoApp, DemoConfig  # noqa: E402
from demo.session import PipelineFactory  # noqa: E402
from tests.conftest import shared_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

if B.find_chromium() is None:
    pytest.skip("chromium is not installed (apt-get install chromium; `make test` installs it)",
                allow_module_level=True)
try:
    B._ffmpeg()  # noqa: SLF001
except B.BrowserMissing as exc:
    pytest.skip(str(exc), allow_module_level=True)

pytestmark = [pytest.mark.slow,
              # Gradio's own table code trips pandas 3 deprecation notes; they are not the demo's.
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
MAX_UPLOAD_MB = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("browser")
    video, _ = B.synthetic_clip(tmp / "set")
    return {"y4m": B.make_y4m(video, tmp / "camera.y4m"), "mp4": B.make_mp4(video, tmp / "still_face.mp4"),
            "tmp": tmp}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = DemoApp(PipelineFactory(), DemoConfig(max_upload_mb=MAX_UPLOAD_MB, max_sessions=3,
                                                work_dir=tmp_path_factory.mktemp("work")))
    demo = app.launch(port=free_port(), block=False, quiet=True)
    yield app, demo.local_url
    app.close()


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def chromium(playwright, clips):
    ARTIFACTS.mkdir(exist_ok=True)
    browser = B.launch_chromium(playwright, clips["y4m"])
    yield browser
    browser.close()


def open_page(chromium, url: str):
    """A page in its own context: its own cookies and Gradio session, like another browser."""
    page = chromium.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.add_init_script(B.PROBE_JS)
    page.goto(url)
    page.wait_for_selector("#webcam", timeout=30_000)
    return page


def wait_for_upload(page, name: str) -> None:
    """Until the upload box lists the file ``name`` (uploaded to the server, ready to analyse)."""
    page.wait_for_function("name => document.querySelector('#video-in').innerText.replace(/\\n/g, '')"
                           ".includes(name)", arg=name, timeout=30_000)


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_neither_the_server_nor_the_page_reaches_beyond_this_machine(chromium, tmp_path, monkeypatch):
    """Nothing is fetched or reported at run time: Gradio's default sends launch statistics to
    and checks its version at api.gradio.app, and pages can pull fonts or scripts from CDNs.
    Every name the server process looks up and every request the page makes is recorded."""
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):
        looked_up.append(host if isinstance(host, str) else repr(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    app = DemoApp(PipelineFactory(), DemoConfig(work_dir=tmp_path))
    demo = app.launch(port=free_port(), block=False, quiet=True)
    requests: list[str] = []
    try:
        page = chromium.new_context().new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(demo.local_url)
        page.wait_for_selector("#disclaimer", timeout=30_000)
        page.wait_for_load_state("load")
        time.sleep(2.0)  # late requests (fonts, the page's own API calls) and Gradio's version-check thread
        page.context.close()
    finally:
        app.close()
    hosts = {urlparse(url).hostname for url in requests if urlparse(url).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, sorted(set(requests))
    assert set(looked_up) <= {"127.0.0.1", "localhost", "::1", "0.0.0.0"}, sorted(set(looked_up))


def test_live_tab_spots_events_serves_two_browsers_and_releases_closed_tabs(server, chromium):
    app, url = server
    first = open_page(chromium, url)
    B.start_webcam(first)
    # The clip's first movement ends 1.5 s in; the flow spotter reports it about 1 s later.
    first.wait_for_function(
        "() => (window.__demoShown || []).some(s => s[4] >= 1)", timeout=60_000)
    first.wait_for_function("() => document.querySelector('#live-events').innerText.includes('micro')",
                            timeout=30_000)
    first.wait_for_selector("#live-plot img", timeout=30_000)
    shown = B.shown_frames(first)
    assert len(shown) >= 20 and len(app.registry) == 1
    frame = first.locator("#live-frame .live-frame")
    assert "face(s)" in frame.inner_text() and "frames/s reach the server" in frame.inner_text()
    assert first.locator("#live-frame img").evaluate("img => img.naturalWidth") == B.CAMERA_SIZE[0]

    # A second browser at once gets its own session; both keep streaming.
    second = open_page(chromium, url)
    B.start_webcam(second)
    second.wait_for_function("() => (window.__demoShown || []).length >= 10", timeout=60_000)
    assert len(app.registry) == 2
    before = len(B.shown_frames(first))
    wait_until(lambda: len(B.shown_frames(first)) >= before + 10, 30, "the first page to keep streaming")
    first.wait_for_timeout(1500)  # one more plot/table tick
    first.screenshot(path=str(ARTIFACTS / "demo_live.png"), full_page=True)
    assert "research tool, not a lie detector" in first.locator("#disclaimer").inner_text()

    # Closing a tab mid-stream releases its pipeline (demo.unload), the other keeps going.
    released = app.registry.released
    second.context.close()
    wait_until(lambda: len(app.registry) == 1 and app.registry.released == released + 1, 30,
               "the closed tab's session to be released")
    before = len(B.shown_frames(first))
    wait_until(lambda: len(B.shown_frames(first)) >= before + 10, 30, "the remaining page to keep streaming")
    B.stop_webcam(first)
    first.context.close()
    wait_until(lambda: len(app.registry) == 0, 30, "the last session to be released")


def test_a_page_over_max_sessions_is_told_at_once_and_starts_when_stop_frees_the_slot(chromium, tmp_path):
    """The stream event used to carry a concurrency limit of --max-sessions: a Gradio stream holds
    its slot until it stops, so the page over the limit waited silently in the queue ("queue:
    1/1") instead of seeing the busy line; and a stopped page kept its slot for the idle timeout."""
    app = DemoApp(PipelineFactory(), DemoConfig(max_sessions=1, idle_s=120, work_dir=tmp_path))
    demo = app.launch(port=free_port(), block=False, quiet=True)
    try:
        first = open_page(chromium, demo.local_url)
        B.start_webcam(first)
        first.wait_for_function("() => (window.__demoShown || []).length >= 5", timeout=60_000)
        second = open_page(chromium, demo.local_url)
        B.start_webcam(second)
        second.locator("#live-frame").get_by_text("the server is busy: 1 live session already runs").wait_for(
            timeout=15_000)
        assert len(app.registry) == 1 and B.shown_frames(second) == []
        before = len(B.shown_frames(first))
        wait_until(lambda: len(B.shown_frames(first)) >= before + 5, 30, "the first page to keep streaming")
        # Stop on the first page frees its slot now, not after 120 s idle: the second page, still
        # streaming, starts spotting by itself.
        stopped = time.monotonic()
        B.stop_webcam(first)
        second.wait_for_function("() => (window.__demoShown || []).length >= 5", timeout=30_000)
        # The registry hands the slot on before the first session's pipeline has finished
        # closing, and counts it released after: the second page can be spotting before then.
        wait_until(lambda: app.registry.released >= 1, 10, "the first session to finish closing")
        assert time.monotonic() - stopped < 30 and len(app.registry) == 1 and app.registry.released >= 1
        # Record again on the first page: now it is the one over the limit.
        first.locator("#webcam button.capture-button").click(timeout=10_000)
        first.locator("#live-frame").get_by_text("the server is busy: 1 live session already runs").wait_for(
            timeout=15_000)
        first.context.close()
        second.context.close()
    finally:
        app.close()


@pytest.mark.parametrize("flag, message", [
    ("--use-fake-device-for-media-stream", CAMERA_ERRORS["NotAllowedError"]),  # a camera, no permission
    ("--use-fake-ui-for-media-stream", CAMERA_ERRORS["NotFoundError"]),  # permission, no camera
], ids=["denied", "no-camera"])
def test_a_page_the_browser_gives_no_camera_says_why(server, playwright, flag, message):
    """Gradio's webcam leaves the browser's refusal unhandled: the page used to show nothing."""
    _, url = server
    browser = playwright.chromium.launch(executable_path=B.find_chromium(), headless=True, args=[flag])
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#webcam", timeout=30_000)
        assert not page.locator("#camera-status .camera-status").is_visible()  # nothing to say yet
        page.get_by_role("button", name="Click to Access Webcam").click(timeout=10_000)
        status = page.locator("#camera-status .camera-status")
        status.wait_for(state="visible", timeout=10_000)
        assert status.inner_text() == message
    finally:
        browser.close()


def test_upload_tab_produces_table_plot_files_and_clear_errors(server, chromium, clips):
    _, url = server
    page = open_page(chromium, url)
    page.get_by_role("tab", name="Upload a video").click()
    page.locator("#video-in input[type=file]").set_input_files(str(clips["mp4"]))
    wait_for_upload(page, "still_face.mp4")
    page.locator("#analyse").click()
    page.wait_for_function("() => document.querySelector('#upload-events').innerText.includes('micro')",
                           timeout=90_000)
    page.wait_for_selector("#upload-plot img", timeout=30_000)
    page.wait_for_selector("#video-out video", timeout=30_000)
    summary = page.locator("#upload-summary").inner_text()
    assert "240 frames" in summary and "events" in summary
    downloads = page.locator("#downloads").inner_text().replace("\n", "")
    assert "still_face_megc.csv" in downloads and "still_face_events.jsonl" in downloads
    assert page.locator("#upload-plot img").evaluate("img => img.naturalWidth") > 400
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "demo_upload.png"), full_page=True)

    # The bundled sample, one click away.
    page.reload()
    page.get_by_role("tab", name="Upload a video").click()
    page.locator("#sample").click()
    wait_for_upload(page, "pyfeat_single_face.mp4")
    page.locator("#analyse").click()
    page.wait_for_function("() => document.querySelector('#upload-summary').innerText.includes('72 frames')",
                           timeout=60_000)

    # Not a video: the page says so.
    bad = clips["tmp"] / "holiday.mp4"
    bad.write_text("not a video\n" * 100)
    page.reload()
    page.get_by_role("tab", name="Upload a video").click()
    page.locator("#video-in input[type=file]").set_input_files(str(bad))
    page.locator("#analyse").click()
    page.get_by_text("holiday.mp4 is not a video this demo can read").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # the notice fades in
    page.screenshot(path=str(ARTIFACTS / "demo_not_a_video.png"), full_page=True)

    # Too large: refused before the upload, with the limit named.
    big = clips["tmp"] / "long_recording.mp4"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB * 2**20 + 1))
    page.reload()
    page.get_by_role("tab", name="Upload a video").click()
    page.locator("#video-in input[type=file]").set_input_files(str(big))
    page.get_by_text(f"exceed the maximum allowed size of {MAX_UPLOAD_MB:.1f} Mb").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "demo_too_large.png"), full_page=True)
    page.context.close()


def test_an_avi_upload_shows_no_error_notice(server, chromium, clips):
    """An MJPEG .avi (the bundled sample's frames), which the analysis reads and chromium cannot
    play: the upload box's preview player (gr.Video's) said "Video not playable" in a red notice."""
    _, url = server
    video = clips["tmp"] / "sample_mjpeg.avi"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(B.SAMPLE_VIDEO), "-c:v", "mjpeg", "-q:v", "4",
                    str(video)], check=True, capture_output=True)
    page = open_page(chromium, url)
    page.get_by_role("tab", name="Upload a video").click()
    page.locator("#video-in input[type=file]").set_input_files(str(video))
    wait_for_upload(page, video.name)
    page.locator("#analyse").click()
    page.wait_for_function("() => document.querySelector('#upload-summary').innerText.includes('72 frames')",
                           timeout=90_000)
    page.wait_for_selector("#video-out video", timeout=30_000)
    assert page.locator(".toast-body").all_inner_texts() == []
    page.context.close()


def test_closing_the_tab_stops_its_upload(server, chromium):
    """Uploads run one at a time: one whose tab was closed used to hold the slot to its end."""
    app, url = server
    video = shared_video("liveportrait_d6_expressions.mp4")  # 1008 frames, 1.9 MB
    page = open_page(chromium, url)
    page.get_by_role("tab", name="Upload a video").click()
    page.locator("#video-in input[type=file]").set_input_files(str(video))
    wait_for_upload(page, video.name)
    page.locator("#analyse").click()
    runs = lambda: list(app.work_dir.glob("run-*/liveportrait_d6_expressions_megc.csv"))  # noqa: E731
    wait_until(lambda: runs(), 30, "the analysis to start")
    page.get_by_text("frame 10").first.wait_for(timeout=30_000)  # the progress bar moves
    page.context.close()
    wait_until(lambda: not runs(), 20, "the analysis to stop and remove its files")


def test_bench_streams_a_real_video_larger_than_the_camera():
    """``python -m demo.bench --video`` with the bundled sample (640x360: the fake camera's clip
    is scaled down to fit 448x336) serves, streams and reports, in one JSON object last."""
    out = subprocess.run([sys.executable, "-m", "demo.bench", "--video", str(B.SAMPLE_VIDEO), "--seconds", "2",
                          "--warmup", "3", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["camera"]["clip"] == str(B.SAMPLE_VIDEO) and report["sessions"] == 1
    page = report["pages"][0]
    assert page["captured_fps"] > 0 and page["sent_fps"] > 0, report
    assert report["server_fps_total"] > 0 and page["shown_fps"] > 0, report
    assert page["latency_ms"]["capture_to_display"]["n"] > 0
    assert "frames reaching the server" in out.stdout
