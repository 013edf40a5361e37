"""``python -m demo.bench``: the live tab measured in a real browser.

It serves the demo in-process on a free local port, opens ``--sessions`` pages in headless
chromium (the system browser, through Playwright) whose fake camera plays a face clip (by
default a still face from the bundled sample with injected micro-expressions, 448x336 at
30 fps), starts each page's webcam stream, lets it settle for ``--warmup`` seconds and then
measures for ``--seconds``:

* **frames/s**: grabbed from the camera by the page (``captured_fps``), posted to the server
  (``sent_fps``), processed by the server (``server_fps``: frames that reach the spotter;
  Gradio keeps only the newest frame when the server is busy, so the rest are dropped, not
  queued) and shown back in the page (``shown_fps``);
* **latency** (ms; median, 95th percentile, mean), from the page's and the server's clocks
  (the same machine, so ``Date.now()`` and ``time.time()`` agree): ``capture_to_display``
  (the camera frame is grabbed -> its annotated frame is in the page: the end-to-end latency a
  user sees), ``send_to_display``, ``server`` (arrival in the handler -> annotated frame
  encoded) and ``return`` (encoded -> shown). A shown frame is paired with the newest frame
  grabbed before the server started on it (the one Gradio handed over).

Also ``events`` spotted per page during the run. ``--json`` prints one JSON object last.

``--video`` plays another face video instead (its first :data:`MAX_CLIP_S` seconds, looped, at
its own frame rate), scaled to fit the 448x336 canvas with its aspect ratio kept. A missing or
unreadable video, or no chromium, ffmpeg, Playwright or Gradio, is one ``error:`` line (status 2).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from engines.machine import machine_info
    from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, missing_module, non_negative_number, positive_int, positive_number,
                          register_user_error, run)
    from realtime.bench import percentiles

    from . import browser as B

# No chromium or ffmpeg on this machine: the benchmark cannot run; say so in one line.
register_user_error(B.BrowserMissing)

#: The longest stretch of a ``--video`` used as the fake camera's clip (seconds; the camera
#: loops it). Bounds the raw ``.y4m`` (about 6.8 MB a second at 448x336, 30 fps).
MAX_CLIP_S = 60.0
#: What to install for the benchmark's own dependencies.
INSTALL_HINT = "pip install 'fgsl-spotter[demo]' playwright"


def _stats(values: list[float]) -> dict[str, float | None]:
    """Median, p95 (``realtime.bench.percentiles``, the live spotter benchmark's) and mean."""
    if not values:
        return {"p50": None, "p95": None, "mean": None, "n": 0}
    return {**percentiles(values, ("p50", "p95"), (50, 95), 1), "mean": round(statistics.fmean(values), 1),
            "n": len(values)}


def page_report(captured: list[float], sent: list[float], shown: list[list[float]], t0: float, t1: float) -> dict:
    """Rates and latencies of one page over ``[t0, t1]`` (ms, ``Date.now()`` clock)."""
    seconds = max((t1 - t0) / 1000, 1e-6)
    captured = sorted(captured)
    window = [s for s in shown if t0 <= s[1] <= t1]
    e2e, send, server, back = [], [], [], []
    sent = sorted(sent)
    for _, recv, done, at, _ in window:
        i = bisect.bisect_right(captured, recv) - 1
        j = bisect.bisect_right(sent, recv) - 1
        if i >= 0:
            e2e.append(at - captured[i])
        if j >= 0:
            send.append(at - sent[j])
        server.append(done - recv)
        back.append(at - done)
    events = [s[4] for s in shown]
    return {
        "captured_fps": round(sum(t0 <= c <= t1 for c in captured) / seconds, 2),
        "sent_fps": round(sum(t0 <= s <= t1 for s in sent) / seconds, 2),
        "shown_fps": round(len(window) / seconds, 2),
        "latency_ms": {"capture_to_display": _stats(e2e), "send_to_display": _stats(send),
                       "server": _stats(server), "return": _stats(back)},
        "events": int(max(events)) if events else 0,
    }


def run_bench(seconds: float = 20.0, warmup: float = 4.0, sessions: int = 1, video: Path | None = None,
              work: Path | None = None) -> dict[str, Any]:
    """Serve the demo, stream ``sessions`` fake webcams into it, return the report."""
    if video is not None:
        with open(video, "rb"):  # a missing or unreadable --video fails now, naming it
            pass
    problem = missing_module(("playwright.sync_api", "gradio", "matplotlib"), "the benchmark", INSTALL_HINT)
    if problem is not None:
        raise B.BrowserMissing(problem)
    from playwright.sync_api import sync_playwright

    from .app import DemoApp, DemoConfig
    from .session import PipelineFactory

    if B.find_chromium() is None:
        raise UsageError("chromium is not installed (apt-get install chromium): the benchmark needs a real browser")
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        tmp_path = Path(work or tmp)
        if video is not None:
            y4m = B.make_y4m(Path(video), tmp_path / "camera.y4m", max_seconds=MAX_CLIP_S)
        else:
            y4m = B.make_y4m(B.synthetic_clip(tmp_path / "clip")[0], tmp_path / "camera.y4m")
        factory = PipelineFactory()
        app = DemoApp(factory, DemoConfig(max_sessions=max(4, sessions)))
        demo = app.launch(port=0, block=False, quiet=True)  # a port the OS has free
        try:
            with sync_playwright() as pw:
                chromium = B.launch_chromium(pw, y4m)
                pages = []
                for _ in range(sessions):
                    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
                    page.add_init_script(B.PROBE_JS)
                    page.goto(demo.local_url)
                    pages.append(page)
                for page in pages:
                    B.start_webcam(page)
                time.sleep(warmup)
                load0 = os.getloadavg()[0]
                frames0 = _server_frames(app)
                t0 = time.time() * 1000
                time.sleep(seconds)
                t1 = time.time() * 1000
                frames1 = _server_frames(app)
                load1 = os.getloadavg()[0]
                reports = [page_report(B.captured_times(p), B.sent_times(p), B.shown_frames(p), t0, t1) for p in pages]
                for page in pages:
                    B.stop_webcam(page)
                version = chromium.version
                chromium.close()
        finally:
            app.close()
    server_fps = sum(max(0, frames1.get(k, 0) - frames0.get(k, 0)) for k in frames1) / ((t1 - t0) / 1000)
    import gradio

    return {
        "what": "demo live tab in headless chromium, fake webcam",
        "camera": {"clip": str(video or f"synthetic still face, {B.CAMERA_SIZE[0]}x{B.CAMERA_SIZE[1]}")},
        "spotter": "flow",
        "sessions": sessions,
        "seconds": round((t1 - t0) / 1000, 2),
        "server_fps_total": round(server_fps, 2),
        "server_fps_per_session": round(server_fps / sessions, 2),
        "pages": reports,
        "machine": {**machine_info(), "load_avg_1m": [round(load0, 2), round(load1, 2)],
                    "chromium": version, "gradio": gradio.__version__},
    }


def _server_frames(app: Any) -> dict[str, int]:
    out = {}
    for key in app.registry.keys():
        session = app.registry.peek(key)
        if session is not None:
            out[key] = session.frames
    return out


def print_table(report: dict[str, Any]) -> None:
    print(f"demo live tab: {report['sessions']} session(s), {report['seconds']} s, spotter {report['spotter']}, "
          f"{report['machine']['cpus']} CPUs (load {report['machine']['load_avg_1m']}), "
          f"chromium {report['machine']['chromium']}")
    print(f"frames reaching the server: {report['server_fps_total']} /s in all, "
          f"{report['server_fps_per_session']} /s per session")
    for n, page in enumerate(report["pages"]):
        lat = page["latency_ms"]
        print(f"page {n}: captured {page['captured_fps']}/s, sent {page['sent_fps']}/s, shown {page['shown_fps']}/s, "
              f"{page['events']} events")
        for name, s in lat.items():
            print(f"  {name:20s} p50 {s['p50']} ms  p95 {s['p95']} ms  mean {s['mean']} ms  (n={s['n']})")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m demo.bench", description=__doc__.split("\n\n")[0],
                            formatter_class=HelpFormatter)
    parser.add_argument("--seconds", type=positive_number, default=20.0, help="measured time (seconds)")
    parser.add_argument("--warmup", type=non_negative_number, default=4.0, help="seconds streamed before measuring")
    parser.add_argument("--sessions", type=positive_int, default=1, help="browser pages streaming at once")
    parser.add_argument("--video",
                        help="face video for the fake camera, scaled to fit 448x336 "
                             "(default: the bundled sample's still face with injected micro-expressions)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_: list[str] | None) -> int:
        report = run_bench(args.seconds, args.warmup, args.sessions, Path(args.video) if args.video else None)
        print_table(report)
        if args.json:
            print(json.dumps(report))
        sys.stdout.flush()
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
