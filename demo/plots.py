"""The per-face motion-signal plot, with spotted intervals shaded and labelled (matplotlib, Agg).

Used by both tabs: the live tab redraws it about once a second over the last seconds of the
stream, the upload tab once over the whole video. The figure API is used without
``pyplot``: no global state, so several sessions can draw at once from Gradio's worker threads.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterable, Mapping

import cv2
import numpy as np

from realtime.overlay import track_colour
from realtime.types import Event

MICRO_RGB = (0.85, 0.12, 0.12)
MACRO_RGB = (0.55, 0.55, 0.55)
MAX_PANELS = 8


def _rgb(track: int) -> tuple[float, float, float]:
    b, g, r = track_colour(track)
    return (r / 255, g / 255, b / 255)


def signal_plot(series: Mapping[int, tuple[np.ndarray, np.ndarray]], events: Iterable[Event],
                threshold: float | None = None, span: tuple[float, float] | None = None,
                title: str = "", width_px: int = 900, panel_px: int = 150,
                note: str = "", ylabel: str = "motion") -> np.ndarray:
    """RGB uint8 image: one panel per face (track), its signal over time (s), the threshold as
    a dashed line and every event as a shaded interval (red: micro, grey: macro) labelled with
    its emotion and score. ``series``: per track, times (s) and values (``ylabel``: their
    unit). ``span``: the time range shown (default: all the data). ``note``: shown when there is
    nothing to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    events = list(events)
    tracks = sorted(set(series) | {e.track for e in events})[-MAX_PANELS:]
    panels = max(1, len(tracks))
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, (panel_px * panels + 60) / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    if span is None:
        times = [t for t, _ in series.values() if len(t)]
        lo = min([float(t[0]) for t in times] + [e.onset_s for e in events], default=0.0)
        hi = max([float(t[-1]) for t in times] + [e.offset_s for e in events], default=1.0)
        span = (lo, hi if hi > lo else lo + 1.0)
    if not tracks:
        ax = axes[0]
        ax.text(0.5, 0.5, note or "no face yet", ha="center", va="center", transform=ax.transAxes, fontsize=12)
        ax.set_yticks([])
    for ax, track in zip(axes, tracks):
        colour = _rgb(track)
        t, v = series.get(track, (np.zeros(0), np.zeros(0)))
        if len(t):
            ax.plot(t, v, color=colour, linewidth=1.4)
            ax.set_ylim(min(0.0, float(np.min(v))) - 0.5, max(float(np.max(v)), (threshold or 0) * 1.25, 1.0) + 0.5)
        else:
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, note or "this spotter publishes no motion signal: spotted intervals only",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.35")
        if threshold is not None and len(t):
            ax.axhline(threshold, color="0.3", linestyle="--", linewidth=0.9)
        lo_y, top = ax.get_ylim()
        shown = [e for e in events if e.track == track and e.offset_s >= span[0] and e.onset_s <= span[1]]
        for n, e in enumerate(sorted(shown, key=lambda e: e.onset_s)):
            fill = MICRO_RGB if e.kind == "micro" else MACRO_RGB
            ax.axvspan(e.onset_s, max(e.offset_s, e.onset_s + 1e-3), color=fill, alpha=0.25, linewidth=0)
            # Labels alternate between two heights so neighbours do not print over each other.
            y = top - (top - lo_y) * (0.02 if n % 2 == 0 else 0.14)
            ax.text((e.onset_s + e.offset_s) / 2, y, f"{e.label} {e.score:.2f}", ha="center", va="top",
                    fontsize=7, color=fill, clip_on=True)
        ax.set_ylabel(f"face #{track}\n{ylabel}" if ylabel and len(t) else f"face #{track}", color=colour,
                      fontweight="bold", fontsize=9)
        ax.grid(alpha=0.25)
    axes[-1].set_xlim(*span)
    axes[-1].set_xlabel("time (s)")
    if title:  # wrapped: a long file name pushed both ends of one line out of the figure
        fig.suptitle(textwrap.fill(title, max(40, width_px // 9)), fontsize=11)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def data_url(image_rgb: np.ndarray, kind: str = "jpeg", quality: int = 85) -> str:
    """An RGB image as a ``data:`` URL (the live tab sends frames inline: no files to clean up)."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if kind == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode image")
    return f"data:image/{kind};base64," + base64.b64encode(buf.tobytes()).decode("ascii")
