"""Driving the demo in a real browser: Debian's chromium through Playwright, with a fake camera.

Shared by the browser tests (``tests/test_demo_browser.py``) and the benchmark
(:mod:`demo.bench`). What works here (``/work/shared/notes/browser-webcam-testing.md``):
Playwright cannot download its own browser, so it launches the system ``chromium``
(``executable_path``); chromium's fake camera plays a ``.y4m`` file (4:2:0, looped, at its own
size) when started with ``--use-fake-ui-for-media-stream --use-fake-device-for-media-stream
--use-file-for-fake-video-capture=FILE``. Gradio 6's webcam starts with the "Click to Access
Webcam" button, then the capture button inside the component ("Record", then "Stop").

The clip is a real face with injected micro-expressions: a still frame of the bundled sample
video (:func:`fgsl.data.synthetic.make_set` with ``still=True``), so the live tab has real
movements to spot. Any other video works too (``python -m demo.bench --video``): it is scaled to
fit the webcam-sized canvas, keeping its aspect ratio, and centred on grey.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from fgsl.data.frames import VideoError
from fgsl.data.synthetic import Recipe, make_set

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VIDEO = ROOT / "samples" / "pyfeat_single_face.mp4"
#: The fake webcam's picture: a 4:3 canvas; the video on it is scaled up at most
#: :data:`CAMERA_UPSCALE` times, and down to fit (the synthetic clip's 128 px face crop: 2x).
CAMERA_SIZE = (448, 336)
CAMERA_UPSCALE = 2
#: The canvas around the video (``pad``'s colour).
CAMERA_PAD = "0x505050"

#: Records, in the page, when each webcam frame is grabbed as JPEG (Gradio's webcam calls
#: ``canvas.toDataURL('image/jpeg')`` per streamed frame: ``window.__demoCaptured``), when it is
#: posted (``window.__demoSent``) and when each
#: annotated frame is shown (``window.__demoShown``: frame number, server arrival and finish
#: times from the frame's ``data-*`` attributes, and the display time). All times are
#: ``Date.now()`` milliseconds, the server's ``time.time()`` clock on the same machine.
PROBE_JS = """
(() => {
  window.__demoCaptured = [];
  window.__demoSent = [];
  window.__demoShown = [];
  const origToDataURL = HTMLCanvasElement.prototype.toDataURL;
  HTMLCanvasElement.prototype.toDataURL = function (type, ...rest) {
    if (type === 'image/jpeg') window.__demoCaptured.push(Date.now());
    return origToDataURL.call(this, type, ...rest);
  };
  const origFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    try {
      const url = typeof input === 'string' ? input : (input && input.url) || '';
      const method = (init && init.method) || (input && input.method) || 'GET';
      if (method.toUpperCase() === 'POST' && /\\/stream\\/[^/]+$/.test(url)) window.__demoSent.push(Date.now());
    } catch (e) {}
    return origFetch(input, init);
  };
  const seen = new Set();
  const look = () => {
    for (const el of document.querySelectorAll('#live-frame .live-frame[data-frame]')) {
      const n = Number(el.dataset.frame);
      if (seen.has(n)) continue;
      seen.add(n);
      window.__demoShown.push([n, Number(el.dataset.recv), Number(el.dataset.done), Date.now(),
                               Number(el.dataset.events)]);
    }
  };
  const start = () => new MutationObserver(look).observe(document.body, {subtree: true, childList: true,
                                                                          attributes: true});
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
"""


class BrowserMissing(RuntimeError):
    """No chromium (or no Playwright) on this machine."""


def find_chromium() -> str | None:
    """``$DEMO_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH."""
    env = os.environ.get("DEMO_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def fake_camera_args(y4m: Path) -> list[str]:
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}"]


def launch_chromium(playwright: Any, y4m: Path | None = None, executable: str | None = None) -> Any:
    """Headless system chromium (with the fake camera playing ``y4m``)."""
    executable = executable or find_chromium()
    if executable is None:
        raise BrowserMissing("chromium is not installed (apt-get install chromium, or set DEMO_CHROMIUM)")
    args = fake_camera_args(y4m) if y4m is not None else []
    return playwright.chromium.launch(executable_path=executable, headless=True, args=args)


def synthetic_clip(out_dir: Path, frames: int = 240, seed: int = 5, amplitude: float = 12.0) -> tuple[Path, Path]:
    """A still real face (the bundled sample's) with injected micro-expressions: the FFV1 video
    and its ground-truth ``annotations.csv``."""
    out_dir = Path(out_dir)
    make_set([SAMPLE_VIDEO], out_dir, Recipe(count=1, frames=frames, amplitude=amplitude, part="test", still=True,
                                             seed=seed), progress=False)
    return next((out_dir / "videos").glob("*.avi")), out_dir / "annotations.csv"


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise BrowserMissing("ffmpeg is not installed (apt-get install ffmpeg): it makes the fake camera's clip")
    return found


def _camera_filter() -> str:
    """``video`` scaled (at most :data:`CAMERA_UPSCALE` x, and down as far as needed) to fit inside
    :data:`CAMERA_SIZE` with its aspect ratio kept (even sizes, for 4:2:0), centred on grey."""
    w, h = CAMERA_SIZE
    k = CAMERA_UPSCALE
    return (f"scale=w='min({k}*iw,{w})':h='min({k}*ih,{h})':force_original_aspect_ratio=decrease"
            f":force_divisible_by=2:flags=lanczos,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color={CAMERA_PAD},setsar=1")


def _convert(video: Path, out: Path, args: list[str], max_seconds: float | None) -> Path:
    """``ffmpeg -i video [-t max_seconds] -vf <camera filter> args out``; a missing or unreadable
    ``video`` is an ``OSError`` naming it, one ffmpeg cannot decode a :class:`VideoError`."""
    video = Path(video)
    with open(video, "rb"):  # FileNotFoundError / IsADirectoryError / PermissionError, naming the file
        pass
    limit = ["-t", f"{max_seconds:g}"] if max_seconds is not None else []
    proc = subprocess.run([_ffmpeg(), "-y", "-loglevel", "error", "-i", str(video), *limit, "-vf", _camera_filter(),
                           *args, str(out)], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0 or not Path(out).is_file() or Path(out).stat().st_size == 0:
        lines = [re.sub(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\]\s*", "", line).strip() for line in proc.stderr.splitlines()]
        why = next((line for line in lines if line), "no picture")
        raise VideoError(f"{video} is not a video ffmpeg can turn into the fake camera's clip ({why})")
    return Path(out)


def make_y4m(video: Path, out: Path, max_seconds: float | None = None) -> Path:
    """The fake camera's clip: ``video`` (its first ``max_seconds``; chromium loops it) on a
    webcam-sized canvas, 4:2:0 ``.y4m`` (raw: about 6.8 MB per second at 30 fps)."""
    return _convert(video, out, ["-pix_fmt", "yuv420p"], max_seconds)


def make_mp4(video: Path, out: Path, max_seconds: float | None = None) -> Path:
    """The same picture as :func:`make_y4m`, as an H.264 ``.mp4`` to upload (near-lossless)."""
    return _convert(video, out, ["-c:v", "libx264", "-crf", "12", "-preset", "veryfast", "-pix_fmt", "yuv420p"],
                    max_seconds)


def start_webcam(page: Any, timeout_ms: float = 30_000) -> None:
    """Open the live tab's webcam and start streaming (the fake camera answers at once)."""
    page.get_by_role("button", name="Click to Access Webcam").click(timeout=timeout_ms)
    page.wait_for_function(
        "() => { const v = document.querySelector('video[data-testid=webcam-video]');"
        " return v && v.readyState >= 2; }", timeout=timeout_ms)
    page.locator("#webcam button.capture-button").click(timeout=timeout_ms)


def stop_webcam(page: Any, timeout_ms: float = 10_000) -> None:
    button = page.locator("#webcam button.capture-button")
    if "stop" in (button.inner_text(timeout=timeout_ms) or "").lower():
        button.click(timeout=timeout_ms)


def shown_frames(page: Any) -> list[list[float]]:
    """``[frame, server arrival ms, server done ms, shown ms, events so far]`` per shown frame."""
    return page.evaluate("() => window.__demoShown || []")


def sent_times(page: Any) -> list[float]:
    """``Date.now()`` of each webcam frame posted to the server."""
    return page.evaluate("() => window.__demoSent || []")


def captured_times(page: Any) -> list[float]:
    """``Date.now()`` of each webcam frame grabbed from the camera (as JPEG)."""
    return page.evaluate("() => window.__demoCaptured || []")
