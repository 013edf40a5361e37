"""``python -m demo``: the browser demo (Gradio) of the live micro-expression spotter.

Two tabs over one set of controls (spotter, sensitivity, max faces):

* **Live webcam**: the browser streams webcam frames to the server (Gradio's streaming image
  input); each browser session gets its own :class:`~realtime.pipeline.Pipeline`
  (:mod:`demo.session`), and the annotated frame comes back with the face boxes, motion
  signals and event banners drawn by :mod:`realtime.overlay`, plus the frames per second
  reaching the server and the processing latency. About once a second the page also receives
  the event table and a plot of each face's motion signal.
* **Upload a video**: a whole file (or the bundled sample) through the same pipeline, with a
  progress bar, then the annotated video, a timeline plot with the spotted intervals, the
  event table and the MEGC CSV and JSONL files (:mod:`demo.upload`).

All spotting is :mod:`realtime`'s; this module only wires it to the page. It serves on
127.0.0.1 unless told otherwise, never shares a public link unless ``--share``, and fetches
nothing at run time.
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m demo.app` is `python -m demo` (it printed nothing and ended), with its
    import runpy  # check for the [demo] extra and its quiet Ctrl-C while importing; it ends the process

    runpy.run_module("demo", run_name="__main__")

import argparse
import atexit
import errno
import html
import json
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from fgsl.cli import (ArgumentParser, HelpFormatter, UsageError, at_least, first_line, number_between, positive_int,
                      positive_number, register_user_error, run)
from realtime.cam import DISCLAIMER
from realtime.interrupts import TERMINATING, interrupt_once
from realtime.spotters import add_engine_flags, fgsl_only_flag
from realtime.types import RealtimeError

from .session import (MAX_FACES, SENSITIVITY_RANGE, DemoError, LiveSession, PipelineFactory, SessionRegistry,
                      Settings)

register_user_error(RealtimeError, DemoError)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VIDEO = ROOT / "samples" / "pyfeat_single_face.mp4"
DEFAULT_PORT = 7860
#: What a Ctrl-C (or SIGTERM, SIGHUP) says while the server closes after the first one.
STILL_CLOSING = "still closing the live sessions (Ctrl-\\ quits at once)"
#: Seconds of the live stream the live plot shows.
LIVE_PLOT_S = 10.0
#: How often the page asks for the live table and plot (seconds).
PANEL_EVERY_S = 1.0
#: Webcam frames are sent at most this often (seconds); frames the server cannot keep up with
#: are dropped by Gradio (the newest frame wins), never queued.
STREAM_EVERY_S = 0.04

CSS = """
#live-frame img {width: 100%; height: auto; display: block; border-radius: 6px;}
#live-plot img {width: 100%; height: auto; display: block;}
.live-stats {font-family: ui-monospace, monospace; font-size: 0.9em; margin-top: 4px;}
.demo-note {border-left: 4px solid #d97706; padding: 6px 10px; background: rgba(217, 119, 6, 0.08);}
.demo-message {border: 2px solid #d97706; border-radius: 6px; padding: 14px; font-size: 1.05em;}
.demo-untrained {color: #b91c1c; font-weight: bold;}
.camera-status:empty {display: none;}
"""

#: What the page says when the browser gives it no camera, by the error ``getUserMedia`` rejects
#: with (``DOMException.name``). Gradio 6's webcam leaves that rejection unhandled: the page
#: showed nothing at all.
CAMERA_ERRORS = {
    "NotAllowedError": "camera access was denied by the browser: allow the camera for this page (the icon in the "
                       "address bar) and reload it; the upload tab works without a camera",
    "NotFoundError": "no camera found: connect one and reload the page; the upload tab works without a camera",
    "NotReadableError": "the camera could not be started (another program may be using it); close that program "
                        "and reload the page",
    "insecure": "this browser offers no camera to this page: it allows cameras only on https:// or localhost "
                "addresses; the upload tab works without a camera",
}
CAMERA_ERRORS["SecurityError"] = CAMERA_ERRORS["NotAllowedError"]
CAMERA_ERRORS["OverconstrainedError"] = CAMERA_ERRORS["NotFoundError"]

#: A ``<script>`` for the page's head (inline: nothing is fetched) that watches the browser's
#: camera requests and writes what went wrong, in :data:`CAMERA_ERRORS`' words, in the live tab's
#: ``#camera-status`` line (cleared when a camera starts). The request's own promise is returned
#: unchanged, so Gradio's webcam behaves as before.
CAMERA_STATUS_JS = """
<script>
(() => {
  const messages = %s;
  const show = (text) => {
    const el = document.querySelector('#camera-status .camera-status');
    if (el) el.textContent = text; else if (text) setTimeout(() => show(text), 250);
  };
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) {
    document.addEventListener('click', (e) => {
      if (e.target.closest && e.target.closest('#webcam')) show(messages.insecure);
    }, true);
    return;
  }
  const request = media.getUserMedia.bind(media);
  media.getUserMedia = (constraints) => {
    const asked = request(constraints);
    if (constraints && constraints.video) {
      asked.then(() => show(''), (err) => show(messages[err && err.name] ||
        ('the camera could not be started: ' + ((err && (err.message || err.name)) || err))));
    }
    return asked;
  };
})();
</script>
"""


def camera_status_head() -> str:
    """The page's ``<head>`` addition: :data:`CAMERA_STATUS_JS` with its messages."""
    return CAMERA_STATUS_JS % json.dumps(CAMERA_ERRORS)


@dataclass
class DemoConfig:
    max_upload_mb: float = 200.0
    max_sessions: int = 4
    idle_s: float = 120.0
    work_dir: Path | None = None


def message_html(text: str, elem: str = "demo-message") -> str:
    return f'<div class="{elem}">{html.escape(text)}</div>'


class DemoApp:
    """The page's handlers and their state (one per server)."""

    def __init__(self, factory: PipelineFactory, config: DemoConfig | None = None) -> None:
        self.factory = factory
        self.config = config or DemoConfig()
        if self.config.work_dir is None:
            self.config.work_dir = Path(tempfile.mkdtemp(prefix="fgsl-demo-"))
            atexit.register(shutil.rmtree, self.config.work_dir, True)
        self.work_dir = Path(self.config.work_dir)
        self.registry = SessionRegistry(self._new_session, self.config.max_sessions, self.config.idle_s)
        self._panels: dict[str, tuple[int, int]] = {}  # session -> (frames, events) last sent

    @property
    def max_upload_bytes(self) -> int:
        return int(self.config.max_upload_mb * 2**20)

    def _new_session(self, settings: Settings) -> LiveSession:
        return LiveSession(settings, self.factory.pipeline(settings))

    # ------------------------------------------------------------------ live tab
    def live_step(self, image: Any, spotter: Any, sensitivity: Any, max_faces: Any,
                  request: gr.Request | None = None) -> str:
        """One webcam frame -> the annotated frame and its stats, as HTML (an inline image, so
        a long stream leaves no files behind)."""
        from .plots import data_url

        if image is None:
            return message_html("waiting for the webcam ...")
        key = _session_key(request)
        try:
            settings = Settings.from_controls(spotter, sensitivity, max_faces)
            session = self.registry.get(key, settings)
            step = session.step(image)
        except (DemoError, RealtimeError) as exc:
            return message_html(str(exc))
        rgb = step.image_bgr[..., ::-1]
        h, w = rgb.shape[:2]
        done = time.time()
        events = list(session.events)
        micro = sum(e.kind == "micro" for e in events)
        median = sorted(session.latencies_ms)[len(session.latencies_ms) // 2]
        untrained = " (UNTRAINED weights)" if session.spotter_name == "fgsl" and self.factory.trained is False else ""
        rate = "…" if step.fps is None else f"{step.fps:.1f}"
        stats = (f"{rate} frames/s reach the server · processing {step.latency_ms:.0f} ms (median "
                 f"{median:.0f}) · {step.faces} face(s) · {len(events)} events ({micro} micro) · "
                 f"frame {step.index} · "
                 f"spotter {session.spotter_name}{untrained}")
        status = step.stats.get("status")
        if status:
            stats += f" · {status}"
        return (f'<div class="live-frame" data-frame="{step.index}" data-recv="{step.received_wall * 1000:.1f}" '
                f'data-done="{done * 1000:.1f}" data-events="{len(events)}">'
                f'<img alt="annotated webcam frame" width="{w}" height="{h}" src="{data_url(rgb)}">'
                f'<div class="live-stats">{html.escape(stats)}</div></div>')

    def live_panels(self, request: gr.Request | None = None) -> tuple[Any, Any]:
        """The live plot and event table, when something changed since the last tick."""
        import numpy as np

        from .plots import data_url, signal_plot
        from .upload import event_rows

        key = _session_key(request)
        session = self.registry.view(key)  # a released session too: its final events must show
        if session is None:
            self._panels.pop(key, None)
            return gr.skip(), gr.skip()
        with session.lock:
            state = (id(session), session.frames, len(session.events) and id(session.events[-1]))
            if self._panels.get(key) == state:
                return gr.skip(), gr.skip()
            self._panels[key] = state
            times = session.timestamps()
            series = {}
            for track, (idx, values) in session.signals.series().items():
                keep = [i for i, x in enumerate(idx.tolist()) if x in times]
                if keep:
                    series[track] = (np.array([times[i] for i in idx[keep].tolist()]), values[keep])
            events = list(session.events)
            now = max(times.values(), default=0.0)
            threshold = session.pipeline.spotter.signal_threshold()
        plot = signal_plot(series, events, threshold=threshold, span=(max(0.0, now - LIVE_PLOT_S), max(now, 1.0)),
                           width_px=1100, panel_px=120, ylabel="motion (x noise)",
                           note="no face yet" if threshold is not None else
                           f"the {session.spotter_name} spotter has no motion signal to plot (its events are shown)",
                           title=f"last {LIVE_PLOT_S:g} s; dashed: threshold; shaded: spotted (red micro, grey macro)")
        rows = event_rows(list(reversed(events)))
        return (f'<div class="live-plot-img"><img alt="motion signal per face" src="{data_url(plot, "png")}"></div>',
                rows)

    def live_stopped(self, request: gr.Request | None = None) -> None:
        """The page's stream ended (Stop pressed): free its live slot now, not after the idle
        timeout, so a page waiting for one (``--max-sessions``) starts at once. Record again
        starts a fresh session; the last frame, plot and table stay on the page until then."""
        key = _session_key(request)
        self.registry.release(key, stream_stopped=True)
        self._panels.pop(key, None)

    def live_clear(self, request: gr.Request | None = None) -> tuple[str, Any, Any]:
        """*Clear live session*: the page asked to start afresh, so its events go too."""
        self.registry.release(_session_key(request), forget=True)
        self._panels.pop(_session_key(request), None)
        return message_html("live session cleared: events, tracks and signals start afresh"), "", []

    def release(self, request: gr.Request | None = None) -> None:
        """The page was closed (``demo.unload``): free its pipeline now."""
        key = _session_key(request)
        self.registry.release(key, page_closed=True)
        self._panels.pop(key, None)

    # ------------------------------------------------------------------ upload tab
    def analyse(self, video: Any, spotter: Any, sensitivity: Any, max_faces: Any, progress: Any = None,
                request: gr.Request | None = None):
        """The upload tab's button: (summary, annotated video, plot, table, files). It stops when
        the page that asked is closed (``demo.unload``): Gradio cannot stop the thread it runs in,
        and uploads run one at a time, so an abandoned one would hold up every other page."""
        from .upload import analyse_video

        if not video:
            raise _user_error("choose a video first (or use the bundled sample, the button below the upload box)")
        path = Path(video if isinstance(video, (str, Path)) else getattr(video, "path", "") or "")
        if "://" in str(video):
            raise _user_error("give a video file, not a link")
        self._sweep_runs()
        out = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))

        def report(fraction: float, text: str) -> None:
            if progress is not None:
                progress(fraction, desc=text)

        try:
            settings = Settings.from_controls(spotter, sensitivity, max_faces)
            report(0.0, "opening the video")
            key = _session_key(request) if request is not None else None
            result = analyse_video(path, settings, self.factory, out, max_bytes=self.max_upload_bytes,
                                   progress=report,
                                   cancelled=None if key is None else lambda: self.registry.page_closed(key))
        except (DemoError, RealtimeError) as exc:
            shutil.rmtree(out, ignore_errors=True)
            raise _user_error(str(exc)) from None
        summary = result.summary
        if settings.spotter == "fgsl" and self.factory.trained is False:
            summary = "**UNTRAINED FGSL weights: these events are meaningless (benchmarks only).** " + summary
        return (summary, str(result.video) if result.video else None, result.plot, result.rows,
                [str(result.csv), str(result.jsonl)])

    def _sweep_runs(self, keep_s: float = 900.0) -> None:
        """Delete run folders older than ``keep_s`` (Gradio has copied their files to its cache)."""
        now = time.time()
        for run_dir in self.work_dir.glob("run-*"):
            try:
                if now - run_dir.stat().st_mtime > keep_s:
                    shutil.rmtree(run_dir, ignore_errors=True)
            except OSError:
                pass

    # ------------------------------------------------------------------ page
    def blocks(self):
        from .upload import TABLE_HEADERS

        spotters = list(self.factory.spotters)
        if self.factory.engine is None:
            spotter_note = ("Spotter: the training-free <b>optical-flow</b> spotter (no weights; emotion guessed from "
                            "facial blendshapes). The <b>FGSL spotter needs trained weights</b>: start the demo with "
                            "<code>python -m demo --weights RUN_DIR</code> to offer it.")
        else:  # (the descriptions name folders: escaped)
            spotter_note = html.escape(f"FGSL: {self.factory.describe('fgsl')}. Flow: {self.factory.describe('flow')}.")
            if self.factory.trained is False:
                spotter_note = f'<span class="demo-untrained">{spotter_note}</span>'
        # analytics_enabled=False: Gradio's default sends launch statistics to, and checks its
        # version at, api.gradio.app; the demo fetches and reports nothing (webcam user studies).
        with gr.Blocks(title="Micro-expression spotter", delete_cache=(600, 3600), analytics_enabled=False) as demo:
            gr.Markdown("# Micro-expression spotter")
            why = DISCLAIMER.split(": ", 1)[-1]
            gr.HTML(f'<div class="demo-note" id="disclaimer"><b>Micro-expression spotting is a research tool, not a '
                    f'lie detector</b>: {html.escape(why)}.<br>{spotter_note}<br>'
                    f'Webcam frames are processed in memory and not stored.</div>')
            with gr.Row():
                spotter = spotter_control(spotters, value="flow", label="Spotter", elem_id="spotter",
                                          info="fgsl needs --weights" if len(spotters) == 1 else None)
                sensitivity = checked_by_handlers(gr.Slider(
                    *SENSITIVITY_RANGE, value=1.0, step=0.05, label="Sensitivity",
                    info=">1 finds weaker movements, <1 fewer false alarms", elem_id="sensitivity"))
                max_faces = checked_by_handlers(gr.Slider(1, MAX_FACES, value=4, step=1, label="Max faces",
                                                          elem_id="max-faces"))
            with gr.Tabs():
                with gr.Tab("Live webcam", id="live", elem_id="tab-live"):
                    with gr.Row():
                        cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                       elem_id="webcam", webcam_options=gr.WebcamOptions(mirror=False))
                        live_frame = gr.HTML(message_html("start the webcam (Record) to spot live"),
                                             elem_id="live-frame", label="Annotated")
                    # Written by the page itself (CAMERA_STATUS_JS) when the browser gives no camera.
                    gr.HTML('<div class="camera-status demo-message" role="status" aria-live="polite"></div>',
                            elem_id="camera-status")
                    live_plot = gr.HTML("", elem_id="live-plot", label="Motion signal per face")
                    live_table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False,
                                              label="Spotted events (newest first)", elem_id="live-events")
                    clear = gr.Button("Clear live session", elem_id="live-clear", size="sm")
                    # No concurrency limit here: a streaming event holds its slot for the whole
                    # stream, not per frame, so a limit would park the page over --max-sessions in
                    # Gradio's queue, silently, until another page stopped. Each stream is one call
                    # at a time; the registry bounds the pipelines (the work) and answers a page
                    # over the limit with the busy line at once (a frame decode each, no spotting).
                    # Not an API (api_visibility="private"): a client call outside the page has no
                    # Stop and no unload, so it held a live slot until --idle-timeout.
                    stream = cam.stream(self.live_step, [cam, spotter, sensitivity, max_faces], [live_frame],
                                        stream_every=STREAM_EVERY_S, concurrency_limit=None,
                                        show_progress="hidden", api_name="live_step", api_visibility="private")
                    # Stop ends the stream event (the page closes it): its slot is freed at once.
                    stream.then(self.live_stopped, None, None, show_progress="hidden", api_name=False,
                                concurrency_limit=None)
                    timer = gr.Timer(PANEL_EVERY_S)
                    timer.tick(self.live_panels, None, [live_plot, live_table], show_progress="hidden",
                               concurrency_limit=self.config.max_sessions, concurrency_id="panels",
                               api_name=False)
                    clear.click(self.live_clear, None, [live_frame, live_plot, live_table], api_name=False)
                with gr.Tab("Upload a video", id="upload", elem_id="tab-upload"):
                    with gr.Row():
                        with gr.Column():
                            # A file box, not gr.Video: its preview is the browser's own player,
                            # which cannot play many videos the analysis reads (an FFV1 or MJPEG
                            # .avi, a .mkv) and said "Video not playable" in a red notice over a
                            # working upload. The annotated result is always a playable H.264 .mp4.
                            video_in = gr.File(label="Video", file_count="single", type="filepath",
                                               elem_id="video-in")
                            # A button, not gr.Examples: a file box's example is copied into
                            # Gradio's cache once, and that copy is deleted after an hour
                            # (delete_cache) or when another server of the process stops; each
                            # click here copies the sample afresh.
                            sample = gr.Button(f"Use the bundled sample ({SAMPLE_VIDEO.name})", size="sm",
                                               elem_id="sample")
                            sample.click(lambda: str(SAMPLE_VIDEO), None, [video_in], api_name=False,
                                         show_progress="hidden")
                            go = gr.Button("Spot micro-expressions", variant="primary", elem_id="analyse")
                            gr.Markdown(f"Videos up to {self.config.max_upload_mb:g} MB.")
                        with gr.Column():
                            summary = gr.Markdown(elem_id="upload-summary")
                            video_out = gr.Video(label="Annotated video", elem_id="video-out", interactive=False)
                    plot = gr.Image(label="Motion signal per face over time", elem_id="upload-plot", type="numpy",
                                    interactive=False, format="png")
                    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, label="Spotted events",
                                         elem_id="upload-events")
                    files = gr.File(label="Downloads: MEGC CSV and event JSONL", file_count="multiple",
                                    elem_id="downloads", interactive=False)

                    def analyse(video, spotter_, sensitivity_, max_faces_, request: gr.Request,
                                progress=gr.Progress()):
                        return self.analyse(video, spotter_, sensitivity_, max_faces_, progress, request)

                    go.click(analyse, [video_in, spotter, sensitivity, max_faces],
                             [summary, video_out, plot, table, files], api_name="analyse", concurrency_limit=1)
            demo.unload(self.release)
        demo.queue(default_concurrency_limit=1)
        self._blocks = demo
        return demo

    def launch(self, host: str = "127.0.0.1", port: int | None = DEFAULT_PORT, share: bool = False,
               block: bool = True, quiet: bool = False):
        """Serve the page on ``host:port``; ``port`` 0 is a port the OS has free (Gradio itself
        would serve on "port 0" and fail), ``None`` Gradio's first free one from 7860. The real
        address is ``local_url`` of the returned Blocks (and Gradio's "Running on" line)."""
        if port == 0:
            port = free_port(host)
        demo = self.blocks()
        self.registry.start_reaper()
        # Gradio's own start-up lines end with a hint about launch(share=True), a Python call our
        # users do not make (the flag is --share): it runs quiet, and the addresses are said here.
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=self.max_upload_bytes,
                    allowed_paths=[str(self.work_dir), str(SAMPLE_VIDEO.parent)], prevent_thread_lock=True,
                    quiet=True, show_error=True, css=CSS, head=camera_status_head())
        if not quiet:
            print(f"Running on local URL:  {demo.local_url.rstrip('/')}", flush=True)
            if share and demo.share_url:
                print(f"Running on public URL: {demo.share_url}", flush=True)
        if block:
            serve_until_interrupted(demo)
        return demo

    def close(self) -> None:
        self.registry.close_all()
        blocks = getattr(self, "_blocks", None)
        if blocks is not None:
            blocks.close(verbose=False)  # (Gradio's "Closing server running on port" line)


def spotter_control(spotters: list[str], **kwargs: Any) -> gr.Dropdown:
    """The spotter control: offers only the spotters this server runs (the page accepts nothing
    else); any other name an API caller sends reaches the handlers (:func:`checked_by_handlers`),
    whose one-line reason (``the FGSL spotter needs trained weights: ...``) then reaches it."""
    return checked_by_handlers(gr.Dropdown(spotters, **kwargs))


def checked_by_handlers(control: Any) -> Any:
    """``control`` handing what its own check refuses to the handlers as it came, so that an API
    caller's bad value (a spotter not offered, a sensitivity or face count out of range, empty, or
    text) gets the demo's one line (:meth:`Settings.from_controls`) instead of Gradio's wording
    (``Value: fgsl is not in the list of choices``, ``Value 100 is greater than maximum value
    4.0``) and a traceback in the server log. The page's own controls send only valid values.

    The check is loosened on these controls, not by subclassing: Gradio writes a ``.pyi`` file
    beside the module of every Component subclass, at import."""
    strict = control.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return strict(payload)
        except Exception:  # noqa: BLE001 - any refusal: the handler says why, in its words
            return payload

    control.preprocess = preprocess  # type: ignore[method-assign]
    return control


def serve_until_interrupted(demo: Any) -> None:
    """Wait while ``demo`` serves; returns on Ctrl-C (and on SIGTERM and SIGHUP, which ``python -m
    demo`` turns into it), which is how a server's run ends, not a failure. Instead of Gradio's
    ``block_thread``, which prints "Keyboard interruption in main thread... closing server." to
    stdout and leaves the live sessions to the process's exit."""
    try:
        while demo.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass


def check_address(host: str, port: int) -> None:
    """Refuse, before anything loads, a ``--host`` that does not resolve or is not this
    machine's and a ``--port`` in use, in our words (Gradio's own advice names its Python
    arguments and environment variables)."""
    if ":" in host:  # an IPv6 address: Gradio's launch() checks its own server at http://::1:PORT, an invalid URL
        raise UsageError(f"--host {host}: an IPv6 address, which Gradio cannot serve on (its start-up check builds "
                         "no valid URL of it); give an IPv4 address (127.0.0.1, 0.0.0.0) or a host name")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind(address)
        except OSError as exc:
            hint = ("--host must be an address of this machine" if exc.errno == errno.EADDRNOTAVAIL
                    else "another --port, or --port 0 for one the OS has free")
            raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc} ({hint})") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS assigns as free on ``host`` now (bound to port 0, then released)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as s:
        s.bind(address)
        return int(s.getsockname()[1])


def _user_error(message: str):
    """A message for the page (a toast that stays until closed; the API client's error text)
    and one line in the server log, instead of a traceback: bad input is not a server bug."""
    print(f"demo: {message}", file=sys.stderr, flush=True)
    return gr.Error(message, duration=None, print_exception=False)


def _session_key(request: Any) -> str:
    """Gradio's per-page session id (one browser tab)."""
    key = getattr(request, "session_hash", None)
    return str(key) if key else "anonymous"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0],
                       formatter_class=HelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 exposes it on the network)")
    p.add_argument("--port", type=at_least(0, 65535), default=DEFAULT_PORT,
                   help="port (0: one the OS has free; the address is printed)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--weights", help="FGSL run folder (model.safetensors + config.json): offers the fgsl spotter")
    add_engine_flags(p)
    p.add_argument("--max-upload-mb", type=number_between(0.01, 1e6), default=200.0,
                   help="largest video the upload tab accepts (0.01-1000000)")
    p.add_argument("--max-sessions", type=positive_int, default=4, help="live webcam sessions at once")
    p.add_argument("--idle-timeout", type=positive_number, default=120.0,
                   help="seconds without a webcam frame after which a live session is released")
    p.add_argument("--face-model", default=None, help="MediaPipe face landmarker bundle (default: the shipped one)")
    return p


def make_app(args: argparse.Namespace) -> DemoApp:
    factory = PipelineFactory(weights=args.weights, backend=args.backend, engine_device=args.engine_device,
                              allow_untrained=args.allow_untrained,
                              preset=args.preset, face_model=args.face_model)
    factory.pipeline(Settings()).finish()  # the face model loads (a corrupt one fails here, in one line)
    return DemoApp(factory, DemoConfig(max_upload_mb=args.max_upload_mb, max_sessions=args.max_sessions,
                                       idle_s=args.idle_timeout))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body(_: list[str] | None) -> int:
        if not (args.weights or args.allow_untrained) and (flag := fgsl_only_flag(args)):
            raise UsageError(f"{flag} concerns the fgsl spotter, which needs --weights (or --allow-untrained)")
        check_address(args.host, args.port)
        app = make_app(args)
        print(DISCLAIMER, file=sys.stderr)
        # SIGTERM and SIGHUP (kill, timeout, docker stop, a closed terminal) end the server as
        # Ctrl-C does: sessions closed (MediaPipe released), temporary files removed at exit.
        # Python's default for them stops the process on the spot. A second Ctrl-C waits for
        # the closing (it stopped it half-way: "interrupted", status 130, sessions left open).
        with interrupt_once(("SIGINT", *TERMINATING), later=STILL_CLOSING):
            try:
                app.launch(args.host, args.port, args.share)  # until Ctrl-C (serve_until_interrupted)
            except OSError as exc:  # taken in the meantime
                raise UsageError(f"cannot serve on {args.host}:{args.port}: {first_line(exc)}") from None
            finally:
                app.close()
            # Ctrl-C is how a server ends, so this is status 0; before it served (loading, starting),
            # Ctrl-C is an interruption like any command's: `interrupted`, status 130 (fgsl.cli.run).
            print("server stopped", file=sys.stderr, flush=True)
        return 0

    return run(body)
