"""What the user sees: face boxes, live motion signals, event banners, a status bar (OpenCV only).

The overlay is the one place where a person judges whether the spotter works, so it shows the
evidence (the per-track motion signal it thresholds) next to its verdicts (event banners), and
the health of the pipeline (fps, drops, latency, camera state) at all times. Everything is drawn
on a copy: the frame the caller holds may still be recorded or fed to other sinks.

Times are *stream time* (``Frame.timestamp``), never wall time, so a video file replayed faster
or slower than real time shows banners for the same span of the video.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fgsl.config import is_positive_number
from fgsl.files import PendingOutput, unwritable_reason
from fgsl.data.frames import NOT_UTF8, is_utf8_name, opencv_quiet
from realtime.types import Event, FaceObservation, RealtimeError

FONT = cv2.FONT_HERSHEY_SIMPLEX

#: BGR colours, one per track (``track % len``): distinct saturated hues that read on skin, on
#: dark and on light backgrounds (no grey: it vanished on a light wall). A colour fixed per
#: track lets the eye follow a face, its plot and its banners.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (80, 220, 80),
    (255, 160, 0),
    (220, 90, 255),
    (255, 255, 80),
    (0, 140, 255),
    (255, 120, 200),
    (60, 255, 200),
    (120, 120, 255),
)
MICRO_FILL = (30, 30, 210)  # saturated red: micro-expressions are what the tool is for
MACRO_FILL = (90, 90, 90)  # grey: macro movements are context, not findings
WARN_COLOUR = (0, 200, 255)  # amber: status warnings (camera lost, ...); no track uses it


def track_colour(track: int) -> tuple[int, int, int]:
    """The BGR colour of ``track`` (stable for the track's whole life)."""
    return PALETTE[int(track) % len(PALETTE)]


#: The smallest Hershey font scale that stays readable, and the largest (4K must not shout).
MIN_SCALE, MAX_SCALE = 0.38, 1.5
#: Banners' text against the status bar's: a frame holds several banners (faces x
#: ``max_banners``) and one status line, and full-size banners crowded four-face frames.
BANNER_SCALE = 0.8


@dataclass(frozen=True)
class _Style:
    """Font and spacing scaled to the image, so text reads at 320x240 and at 1280x720 alike."""

    scale: float
    thick: int
    pad: int
    line_h: int
    baseline: int

    @classmethod
    @functools.lru_cache(maxsize=64)
    def for_shape(cls, height: int, width: int) -> "_Style":
        return cls(1.0, 1, 0, 0, 0).scaled(min(height, width) / 800.0)

    def width(self, text: str) -> int:
        return cv2.getTextSize(text, FONT, self.scale, self.thick)[0][0]

    @functools.lru_cache(maxsize=64)  # (drawn every frame: text measured once per size)
    def scaled(self, factor: float) -> "_Style":
        """The same style with text ``factor`` times as large (within the legible minimum and
        ``MAX_SCALE``)."""
        scale = float(np.clip(self.scale * factor, MIN_SCALE, MAX_SCALE))
        thick = 1 if scale < 0.75 else 2
        (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, thick)
        pad = max(2, round(4 * scale))
        return _Style(scale, thick, pad, text_h + baseline + pad, baseline)


def _put(img: np.ndarray, text: str, x: int, y_top: int, st: _Style, colour, outline=True) -> None:
    """Text whose box starts at ``y_top``; a dark outline keeps it legible on any background."""
    org = (int(x), int(y_top + st.line_h - st.baseline - st.pad // 2))
    if outline:
        cv2.putText(img, text, org, FONT, st.scale, (0, 0, 0), st.thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, st.scale, colour, st.thick, cv2.LINE_AA)


def _paste(out: np.ndarray, canvas: np.ndarray, x: int, y: int, alpha: float) -> None:
    """Blend ``canvas`` into ``out`` at (x, y), clipped to the image (panels may hang off it)."""
    h, w = out.shape[:2]
    ch, cw = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + cw, w), min(y + ch, h)
    if x0 >= x1 or y0 >= y1 or alpha <= 0:
        return
    src = canvas[y0 - y : y1 - y, x0 - x : x1 - x]
    if alpha >= 1:
        out[y0:y1, x0:x1] = src
    else:
        out[y0:y1, x0:x1] = cv2.addWeighted(src, alpha, out[y0:y1, x0:x1], 1.0 - alpha, 0.0)


def _stat(stats: Any, key: str) -> Any:
    """``stats[key]`` for a mapping, ``stats.key`` for a dataclass-like object, else None."""
    if stats is None:
        return None
    if isinstance(stats, Mapping):
        return stats.get(key)
    return getattr(stats, key, None)


def _clip_box(box: Iterable[float], height: int, width: int) -> tuple[int, int, int, int] | None:
    """Integer box limited to a margin around the image; None when it is not finite."""
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        return None
    x0, y0, x1, y1 = vals
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    # OpenCV clips drawing itself, but giant coordinates overflow its int maths.
    cx = lambda v: int(np.clip(round(v), -width, 2 * width))  # noqa: E731
    cy = lambda v: int(np.clip(round(v), -height, 2 * height))  # noqa: E731
    return cx(x0), cy(y0), cx(x1), cy(y1)


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)


#: How much covering each thing costs, per pixel, when nothing free is left (a frame full of
#: faces): the upper half of a face (eyes and brows, where most micro-expressions show) most,
#: then banners (text half hidden cannot be read), a face's lower half (mouth corners), plots.
EYES_COST, BANNER_COST, MOUTH_COST, PLOT_COST = 4.0, 3.0, 2.0, 1.0
#: How much a box may cover (cost per pixel of its area) and keep its side from the last frame.
STAY_SLACK = 0.05
#: Where nothing beside a face is free: the frame is searched on a GRID x GRID grid, each
#: pixel of distance from the face's first spot costing as much as covering DISTANCE_COST
#: pixels of a plot (a banner far from its face is still tied to it by its colour and id).
GRID = 9
DISTANCE_COST = 2.0


def _face_costs(box: Rect) -> list[tuple[Rect, float]]:
    """A face box as the two halves a layout should cover least."""
    x0, y0, x1, y1 = box
    mid = (y0 + y1) // 2
    return [((x0, y0, x1, mid), EYES_COST), ((x0, mid, x1, y1), MOUTH_COST)]


def _costs(rects: np.ndarray, taken: list[tuple[Rect, float]]) -> np.ndarray:
    """What covering ``taken`` costs for each of ``rects`` (rows of x0, y0, x1, y1)."""
    if not taken:
        return np.zeros(len(rects))
    boxes = np.array([box for box, _ in taken], np.int64)[None]  # [1, taken, 4] against [rects, 1, 4]
    weights = np.array([weight for _, weight in taken])
    r = rects[:, None]
    ow = np.maximum(np.minimum(r[..., 2], boxes[..., 2]) - np.maximum(r[..., 0], boxes[..., 0]), 0)
    oh = np.maximum(np.minimum(r[..., 3], boxes[..., 3]) - np.maximum(r[..., 1], boxes[..., 1]), 0)
    return (ow * oh) @ weights


Spot = int | tuple[int, int]  # a side of the face (its number), or a place in the frame


def _place(size: tuple[int, int], spots: list[tuple[int, int]], taken: list[tuple[Rect, float]], bounds: Rect,
           prefer: Spot | None = None) -> tuple[Spot, Rect, float]:
    """Where a ``(w, h)`` box goes: the first of ``spots`` (top-left corners beside its face, in
    order of preference), moved inside ``bounds``, that overlaps nothing ``taken``
    (rectangles with a cost per pixel). ``prefer`` (what was chosen last: a spot's number, or a
    place in the frame) is kept while it covers no more than ``STAY_SLACK`` of its own area, so
    a face moving by a few pixels does not flip its banners from side to side. Where no spot is
    free (a frame full of faces), anywhere on a coarse grid of the frame, the cheapest counting
    ``DISTANCE_COST`` per pixel away from the first spot. Returns the spot's number or the
    place in the frame, the rectangle and its cost."""
    w, h = size
    x_max, y_max = max(bounds[0], bounds[2] - w), max(bounds[1], bounds[3] - h)
    inside = lambda xy: (int(np.clip(xy[0], bounds[0], x_max)), int(np.clip(xy[1], bounds[1], y_max)))  # noqa: E731
    corners = np.array([inside(xy) for xy in spots], np.int64)
    cost_of = lambda tops: _costs(np.concatenate([tops, tops + (w, h)], axis=1), taken)  # noqa: E731
    costs = cost_of(corners)
    if isinstance(prefer, tuple):  # a place in the frame found last time
        kept = np.array([inside(prefer)], np.int64)
        cost = float(cost_of(kept)[0])
        if cost <= STAY_SLACK * w * h and not (costs == 0).any():
            x, y = (int(v) for v in kept[0])
            return (x, y), (x, y, x + w, y + h), cost
    elif prefer is not None and 0 <= prefer < len(spots) and costs[prefer] <= STAY_SLACK * w * h:
        x, y = (int(v) for v in corners[prefer])
        return prefer, (x, y, x + w, y + h), float(costs[prefer])
    free = np.flatnonzero(costs == 0)
    if free.size:
        x, y = (int(v) for v in corners[free[0]])
        return int(free[0]), (x, y, x + w, y + h), 0.0
    gx, gy = np.meshgrid(np.linspace(bounds[0], x_max, GRID), np.linspace(bounds[1], y_max, GRID))
    every = np.concatenate([corners, np.stack([gx.ravel(), gy.ravel()], axis=1).round().astype(np.int64)])
    every_cost = cost_of(every)
    best = int(np.argmin(every_cost + DISTANCE_COST * np.hypot(*(every - corners[0]).T)))
    x, y = (int(v) for v in every[best])
    return (best if best < len(spots) else (x, y)), (x, y, x + w, y + h), float(every_cost[best])


class OverlayState:
    """Draws annotated frames and remembers what must stay steady from frame to frame.

    An event is emitted in exactly one frame (``events_new``), after its offset; a banner drawn
    only then would flash for 33 ms. The state keeps each event for ``banner_s`` seconds of
    stream time after it arrived, fading out over the last ``fade_s``, at most ``max_banners``
    per track (newest first; only the newest with its frame numbers, the older ones in one
    line). A clock that runs backwards (a new stream) clears the memory.

    Layout: each face gets a filled id chip above its box, its signal plot and its banners
    beside it, each on the first side where it covers no face, no chip, no plot and no other
    banner (the plot below, beside or above the face; the banners above, beside or below): a
    micro-expression is watched on the eyes and brows, which a banner must not hide. Where no
    side is free, a face's banners shrink to the newest in one line, and then go wherever on
    the frame covers least (eyes and brows last), near the face. Plots and banners follow the
    face through an anchor that ignores the box's jitter (a talking head's landmark box shakes
    by a few pixels a frame), and keep their side while it stays free. Banners of a face that
    is gone go to a free corner.

    ``signal_s`` seconds of each track's signal are plotted, assuming ``signal_rate`` samples a
    second (the spotter's model frame rate: one value per model frame). With
    ``signal_threshold`` (the spotter's, in the signal's units) the plot has a fixed scale,
    0 to twice the threshold, a dashed threshold line and what crosses it filled with a dim
    tint of the track's colour: a peak can be read against the verdicts (a crossing is not
    one: the spotter drops steps, lobes and blinks). Without one, the plot scales to its values, never
    to a span under ``signal_floor`` (so sensor noise stays a flat line). ``fps`` and
    ``latency_ms`` of the status bar are refreshed every ``stats_s`` seconds of stream time,
    so they can be read. Text is sized for the frame; ``shown_width``: the width in pixels the
    frame is shown at when that is less (a web page that shows a 960 px frame 575 px wide made
    its text 6-7 px high), so the text is enlarged to stay legible there.
    """

    #: Each edge of a face's layout anchor stays put while the box's edge moves by no more than
    #: this fraction of its size (at least ``DEADBAND_MIN_PX``), and then takes the box's place
    #: at once: the jitter of a talking head's landmark box (up to 8 px a frame on a 190 px
    #: face) moves no plot or banner, a jaw that drops moves only what hangs from the chin, and
    #: a face that really moves is followed without lag.
    DEADBAND = 0.05
    DEADBAND_MIN_PX = 3.0

    def __init__(
        self,
        banner_s: float = 2.5,
        fade_s: float = 0.6,
        signal_s: float = 3.0,
        signal_rate: float = 30.0,
        signal_floor: float = 0.5,
        max_banners: int = 3,
        signal_threshold: float | None = None,
        stats_s: float = 0.5,
        shown_width: int | None = None,
    ) -> None:
        if not banner_s > 0 or not 0 <= fade_s <= banner_s:
            raise RealtimeError("overlay needs banner_s > 0 and 0 <= fade_s <= banner_s")
        if not signal_s > 0 or not signal_rate > 0 or not signal_floor > 0:
            raise RealtimeError("overlay needs signal_s, signal_rate and signal_floor > 0")
        if signal_threshold is not None and not is_positive_number(signal_threshold):
            raise RealtimeError(f"overlay needs a positive signal threshold, got {signal_threshold!r}")
        self.banner_s = float(banner_s)
        self.fade_s = float(fade_s)
        self.signal_samples = max(2, round(signal_s * signal_rate))
        self.signal_floor = float(signal_floor)
        self.signal_threshold = None if signal_threshold is None else float(signal_threshold)
        self.max_banners = int(max_banners)
        self.stats_s = float(stats_s)
        self.shown_width = shown_width
        self._events: dict[int, list[tuple[float, Event]]] = {}
        self._last_now: float | None = None
        self._anchors: dict[int, Rect] = {}  # track -> the box its plot and banners are laid out from
        self._sides: dict[tuple[int, str], Spot] = {}  # (track, "plot"/"banners") -> where it went last
        self._shown: dict[str, Any] = {}  # fps and latency as last refreshed
        self._shown_at: float | None = None

    @classmethod
    def for_spotter(cls, spotter: Any, **options: Any) -> "OverlayState":
        """The overlay for ``spotter``'s signal: its rate, and its threshold when it has one."""
        return cls(signal_rate=spotter.fps, signal_threshold=spotter.signal_threshold(), **options)

    # -- event memory ---------------------------------------------------------------------

    def add_events(self, events: Iterable[Event], now_s: float) -> None:
        """Remember ``events`` as arrived at stream time ``now_s``."""
        self._expire(now_s)
        for event in events:
            kept = self._events.setdefault(int(event.track), [])
            kept.insert(0, (float(now_s), event))
            del kept[self.max_banners :]

    def active(self, now_s: float) -> dict[int, list[tuple[Event, float]]]:
        """Per track, the events still shown at ``now_s`` with their opacity (newest first)."""
        self._expire(now_s)
        out: dict[int, list[tuple[Event, float]]] = {}
        for track, kept in self._events.items():
            shown = []
            for t0, event in kept:
                left = self.banner_s - (now_s - t0)
                alpha = 1.0 if self.fade_s == 0 or left >= self.fade_s else left / self.fade_s
                shown.append((event, float(np.clip(alpha, 0.0, 1.0))))
            if shown:
                out[track] = shown
        return out

    def _expire(self, now_s: float) -> None:
        if self._last_now is not None and now_s < self._last_now:
            self._events.clear()  # the stream restarted: old banners describe another video
            self._shown_at = None
        self._last_now = now_s
        for track in list(self._events):
            kept = [(t0, e) for t0, e in self._events[track] if now_s - t0 < self.banner_s]
            if kept:
                self._events[track] = kept
            else:
                del self._events[track]

    def _deadband(self, box: Rect) -> float:
        return max(self.DEADBAND_MIN_PX, self.DEADBAND * max(box[2] - box[0], box[3] - box[1]))

    def _anchor(self, track: int, box: Rect) -> Rect:
        """The face's box for laying out its plot and banners: each edge held while it only jitters."""
        old = self._anchors.get(track)
        band = self._deadband(box)
        x0, y0, x1, y1 = box if old is None else (b if abs(a - b) > band else a for a, b in zip(old, box))
        self._anchors[track] = anchor = (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
        return anchor

    # -- drawing --------------------------------------------------------------------------

    def draw(
        self,
        image_bgr: np.ndarray,
        faces: list[FaceObservation],
        signals: Mapping[int, np.ndarray],
        events_new: list[Event],
        stats: Any,
        now_s: float,
    ) -> np.ndarray:
        """Return an annotated copy of ``image_bgr`` (the input is never modified).

        ``signals``: per track, the recent motion-signal values (oldest first; the last
        ``signal_s`` seconds are plotted; a face without one gets no plot).
        ``stats``: a mapping (or object) with any of ``fps``, ``dropped``, ``latency_ms``,
        ``spotter``, ``untrained``, ``status``; missing ones are left out of the status bar.
        """
        if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 or (
            image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or min(image_bgr.shape[:2]) < 2
        ):
            shape = getattr(image_bgr, "shape", None)
            raise RealtimeError(f"overlay needs a BGR uint8 HxWx3 image, got {shape}")
        out = np.array(image_bgr, copy=True, order="C")
        h, w = out.shape[:2]
        st = _Style.for_shape(h, w)
        if self.shown_width is not None and w > self.shown_width:  # shown shrunk: text as large as it needs
            st = st.scaled(w / self.shown_width)
        self.add_events(events_new, now_s)
        banners = self.active(now_s)
        bar = self._status_layout(self._refreshed(stats, now_s), st, w)
        bar_h = len(bar) * st.line_h + st.pad if bar else 0
        bounds: Rect = (0, bar_h, w, h)
        shown = [(face, box) for face in faces if (box := _clip_box(face.box, h, w)) is not None]
        tracks = {int(face.track) for face, _ in shown}
        for track in set(self._anchors) - tracks:
            del self._anchors[track]
        for key in [key for key in self._sides if key[0] not in tracks]:
            del self._sides[key]
        # Plots and banners follow each face's anchor, which ignores the box's jitter.
        anchors = {int(face.track): self._anchor(int(face.track), box) for face, box in shown}
        # What is covered least: the faces, where plots and banners are laid out from (their
        # jittering boxes would make a side's cost, and so the side, change from frame to frame).
        taken = [part for box in anchors.values() for part in _face_costs(box)]
        tops: dict[int, int] = {}  # track -> where "above its box and chip" ends, from the anchor
        for face, box in shown:
            track = int(face.track)
            cv2.rectangle(out, box[:2], box[2:], track_colour(track), max(1, st.thick), cv2.LINE_AA)
            chip = self._chip(out, track, box, bar_h, st)
            taken.append((chip, EYES_COST))
            anchor = anchors[track]
            tops[track] = anchor[1] - (chip[3] - chip[1] if chip[1] < box[1] else 0) - round(self._deadband(anchor))
        plots: dict[int, Rect] = {}
        for face, _ in shown:
            track = int(face.track)
            values = signals.get(track)
            canvas = None if values is None else self._signal_canvas(values, track_colour(track), out.shape[:2],
                                                                     anchors[track], st)
            if canvas is not None:
                plots[track] = self._place_plot(out, canvas, track, anchors[track], tops[track], taken, bounds, st)
                taken.append((plots[track], PLOT_COST))
        # Banners after all faces and plots, so nothing hides them and they hide none of them.
        bst = st.scaled(BANNER_SCALE)
        corners = [(0, h), (w, h), (0, bar_h), (w, bar_h)]
        for track, events in banners.items():
            stack = [(self._banner(e, track, bst, w, detail=i == 0), alpha) for i, (e, alpha) in enumerate(events)]
            if track in anchors:
                rect = self._place_banners(out, stack, events[0], track, anchors[track], tops[track],
                                           plots.get(track), taken, bounds, bst, w)
            else:  # the face is gone (lost right after its event): a free corner
                size = self._stack_size(stack, bst)
                spots = [(x - size[0] if x else x, y - size[1] if y > h // 2 else y) for x, y in corners]
                _, rect, _ = _place(size, spots, taken, bounds)
                self._paste_stack(out, stack, rect, newest_last=False, st=bst)
            taken.append((rect, BANNER_COST))
        self._status_bar(out, bar, bar_h, st)  # last: nothing may hide the pipeline's health
        return out

    def _chip(self, out: np.ndarray, track: int, box: Rect, bar_h: int, st: _Style) -> Rect:
        """The track's id as a chip of its colour on the box's top left corner, outside the box
        when there is room above it; returns the chip's rectangle."""
        tag = f"#{track}"
        cw, ch = st.width(tag) + 2 * st.pad, st.line_h
        h, w = out.shape[:2]
        x = int(np.clip(box[0], 0, max(0, w - cw)))
        y = box[1] - ch if box[1] - ch >= bar_h else int(np.clip(box[1], bar_h, max(bar_h, h - ch)))
        canvas = np.empty((ch, cw, 3), np.uint8)
        canvas[:] = track_colour(track)
        _put(canvas, tag, st.pad, 0, st, (0, 0, 0), outline=False)
        _paste(out, canvas, x, y, 1.0)
        return x, y, x + cw, y + ch

    def _place_plot(self, out, canvas, track: int, anchor: Rect, top: int, taken: list[tuple[Rect, float]],
                    bounds: Rect, st: _Style) -> Rect:
        """Paste a face's plot below it, or beside it, or above it (``top``: over its chip): the
        first side free."""
        ch, cw = canvas.shape[:2]
        x0, y0, x1, y1 = anchor
        spots = [(x0, y1 + st.pad), (x1 + st.pad, y1 - ch), (x0 - cw - st.pad, y1 - ch), (x0, top - ch - st.pad)]
        side, rect, _ = _place((cw, ch), spots, taken, bounds, self._sides.get((track, "plot")))
        self._sides[(track, "plot")] = side
        _paste(out, canvas, rect[0], rect[1], 0.85)
        return rect

    @staticmethod
    def _stack_size(canvases, st: _Style) -> tuple[int, int]:
        return max(c.shape[1] for c, _ in canvases), sum(c.shape[0] + st.pad for c, _ in canvases) - st.pad

    def _place_banners(self, out, stack, newest: tuple[Event, float], track: int, anchor: Rect, top: int,
                       plot: Rect | None, taken: list[tuple[Rect, float]], bounds: Rect, st: _Style,
                       max_w: int) -> Rect:
        """A face's banners above it (``top``: over its chip), or beside it, or below it (and its
        plot): the first side free; where none is, the newest banner alone in one line, if that
        covers less. The newest banner is nearest the face, so an old one fading at the far end
        moves none."""
        x0, y0, x1, y1 = anchor
        below = max(y1, plot[3] if plot is not None else y1) + st.pad
        best = None
        for crowded in (False, True):
            canvases = [(self._banner(newest[0], track, st, max_w, detail=False), newest[1])] if crowded else stack
            bw, bh = self._stack_size(canvases, st)
            spots = [(x0, top - st.pad - bh), (x1 + st.pad, y0), (x0 - bw - st.pad, y0), (x0, below)]
            side, rect, cost = _place((bw, bh), spots, taken, bounds, self._sides.get((track, "banners")))
            if best is None or cost < best[0]:
                best = (cost, canvases, side, rect)
            if cost == 0:
                break
        _, canvases, side, rect = best
        self._sides[(track, "banners")] = side
        self._paste_stack(out, canvases, rect, newest_last=side == 0, st=st)
        return rect

    def _paste_stack(self, out, canvases, rect: Rect, newest_last: bool, st: _Style) -> None:
        """Banners (newest first in ``canvases``) stacked in ``rect``, left-aligned; from the
        bottom up when ``newest_last`` (a stack above its face keeps the newest at the face)."""
        if newest_last:
            y = rect[3]
            for canvas, alpha in canvases:
                y -= canvas.shape[0]
                _paste(out, canvas, rect[0], y, alpha)
                y -= st.pad
        else:
            y = rect[1]
            for canvas, alpha in canvases:
                _paste(out, canvas, rect[0], y, alpha)
                y += canvas.shape[0] + st.pad

    def _refreshed(self, stats: Any, now_s: float) -> dict[str, Any]:
        """The status items, with ``fps`` and ``latency_ms`` as last refreshed (every ``stats_s``
        of stream time: numbers redrawn every frame flicker and cannot be read)."""
        items = {key: _stat(stats, key) for key in ("fps", "dropped", "latency_ms", "spotter", "untrained", "status")}
        if self._shown_at is None or now_s - self._shown_at >= self.stats_s:
            self._shown = {key: items[key] for key in ("fps", "latency_ms")}
            self._shown_at = now_s
        return {**items, **self._shown}

    def _status_layout(self, stats: Mapping[str, Any], st: _Style, width: int) -> list[list[tuple]]:
        """The status items, wrapped into lines that fit ``width``: [(x, text, colour)] each."""
        items: list[tuple[str, tuple[int, int, int]]] = []
        fps, dropped, latency, spotter, untrained, status = (
            stats.get(key) for key in ("fps", "dropped", "latency_ms", "spotter", "untrained", "status"))
        white = (255, 255, 255)
        if isinstance(fps, (int, float)):
            items.append((f"fps {fps:.1f}", white))
        if isinstance(dropped, (int, float)):
            items.append((f"dropped {int(dropped)}", white if dropped == 0 else WARN_COLOUR))
        if isinstance(latency, (int, float)):
            items.append((f"latency {latency:.0f} ms", white))
        if spotter:
            items.append((f"spotter {spotter} UNTRAINED", WARN_COLOUR) if untrained else (f"spotter {spotter}", white))
        if status:
            items.append((str(status), WARN_COLOUR))
        lines: list[list[tuple[int, str, tuple]]] = []
        x = st.pad
        for text, colour in items:
            tw = st.width(text)
            if not lines or (lines[-1] and x + tw > width - st.pad):
                lines.append([])
                x = st.pad
            lines[-1].append((x, text, colour))
            x += tw + st.width("  ")
        return lines

    def _status_bar(self, out: np.ndarray, lines, bar_h: int, st: _Style) -> None:
        """A translucent dark band at the top with the laid-out status items."""
        if not lines:
            return
        _paste(out, np.zeros((bar_h, out.shape[1], 3), np.uint8), 0, 0, 0.6)
        for i, line in enumerate(lines):
            for x, text, colour in line:
                _put(out, text, x, st.pad // 2 + i * st.line_h, st, colour, outline=False)

    def _signal_canvas(self, sig, colour, shape: tuple[int, int], anchor: Rect, st: _Style) -> np.ndarray | None:
        """The track's last ``signal_s`` seconds, newest at the right edge, as a panel as wide
        as the face and a quarter as high (within 24 px and an eighth of the frame: several
        faces leave room for little more)."""
        h, w = shape
        face_w, face_h = anchor[2] - anchor[0], anchor[3] - anchor[1]
        ph = int(np.clip(0.25 * face_h, min(24, h // 4), max(24, 0.12 * h)))
        pw = int(np.clip(face_w, min(3 * ph, w), max(min(3 * ph, w), w // 2)))
        if ph < 8 or pw < 16:  # (a frame a few pixels high: no room for a plot)
            return None
        canvas = np.full((ph, pw, 3), 24, np.uint8)
        cv2.rectangle(canvas, (0, 0), (pw - 1, ph - 1), colour, 1)
        values = np.asarray(sig, np.float64).ravel()
        values = np.nan_to_num(values[-self.signal_samples :], nan=0.0, posinf=0.0, neginf=0.0)
        m = max(2, ph // 10)
        if self.signal_threshold is not None:  # fixed: 0 to twice the threshold
            lo, hi = 0.0, 2 * self.signal_threshold
            values = np.clip(values, lo, hi)
        else:
            lo = min(0.0, float(values.min())) if values.size else 0.0
            hi = max(0.0, float(values.max())) if values.size else 0.0
        span = max(hi - lo, self.signal_floor)
        y_of = lambda v: ph - m - (v - lo) / span * (ph - 2 * m)  # noqa: E731
        zero_y = int(round(y_of(0.0)))
        cv2.line(canvas, (1, zero_y), (pw - 2, zero_y), (90, 90, 90), 1)
        step = (pw - 2 * m) / (self.signal_samples - 1)
        xs = (pw - m) - (values.size - 1 - np.arange(values.size)) * step
        ys = y_of(values)
        if self.signal_threshold is not None and values.size >= 2:
            ty = int(round(y_of(self.signal_threshold)))
            cols = np.arange(pw)
            top = np.interp(cols, xs, ys, left=np.inf, right=np.inf)  # the curve's height per column
            rows = np.arange(ph)[:, None]
            # What crosses it, in a dim tint of the track's colour: a crossing is no verdict (the
            # spotter drops steps, lobes and blinks); red is for the events' banners.
            canvas[(rows >= top[None, :]) & (rows <= ty)] = np.asarray(colour) * 0.45
            for x in range(1, pw - 2, 6):  # the threshold, dashed
                cv2.line(canvas, (x, ty), (min(x + 2, pw - 2), ty), (200, 200, 200), 1)
        if values.size >= 2:
            pts = np.round(np.stack([xs, ys], 1)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [pts], False, colour, 1 + (st.thick > 1), cv2.LINE_AA)
        return canvas

    def _banner(self, event: Event, track: int, st: _Style, max_w: int, detail: bool = True) -> np.ndarray:
        """One banner: ``#0 MICRO positive 0.82`` over ``onset 123 apex 127 offset 131 (4.10-4.37 s)``;
        without ``detail`` (an older one) one line, ``#0 MICRO positive 0.82 4.10-4.37 s``.

        The detail wraps onto more lines when the image is too narrow for it, so a 320 px
        wide stream still shows every number. Macro movements are grey and lower case.
        """
        micro = event.kind != "macro"
        head = f"#{track} {'MICRO' if micro else 'macro'} {event.label} {event.score:.2f}"
        span = f"({event.onset_s:.2f}-{event.offset_s:.2f} s)"
        chunks = [f"onset {event.onset}", f"apex {event.apex}", f"offset {event.offset}", span] if detail else [span]
        stripe = max(3, st.pad)
        inner = max_w - stripe - 2 * st.pad
        lines = [head] if not detail else [head, chunks.pop(0)]
        for chunk in chunks:
            joined = f"{lines[-1]} {chunk}"
            if st.width(joined) <= inner:
                lines[-1] = joined
            else:
                lines.append(chunk)
        bw = stripe + st.pad + max(st.width(t) for t in lines) + st.pad
        bh = len(lines) * st.line_h + st.pad
        canvas = np.empty((bh, bw, 3), np.uint8)
        canvas[:] = MICRO_FILL if micro else MACRO_FILL
        canvas[:, :stripe] = track_colour(track)
        colour = (255, 255, 255) if micro else (220, 220, 220)
        for i, text in enumerate(lines):
            _put(canvas, text, stripe + st.pad, st.pad // 2 + i * st.line_h, st, colour, outline=False)
        return canvas


#: Names OpenCV's writer makes an ``mp4v`` video for (checked on OpenCV 5.1; ``.webm`` needs VP8/9).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


class VideoSaver:
    """Records annotated frames to an mp4 (``mp4v``), so a session can be reviewed afterwards.

    The writer opens on the first frame because only then is the size known. A bad path is
    reported when the saver is made (a name without a video suffix, an unwritable folder; a
    missing folder is made on the first frame) or, at the latest, on the
    first frame, as a :class:`RealtimeError`, never as a silently empty file. Frames of another
    size (a camera that reopened at a different resolution) are resized to the first size, as
    an mp4 stream cannot change size.

    Frames go to a hidden temporary file beside ``path``, which :meth:`close` puts in place
    only while :attr:`keep` is true and once the file reads back whole: OpenCV's writer drops
    failed writes without a word (a full disk, a file size limit), and an earlier good video
    must be replaced neither by a broken one nor by the video of a run that failed
    (``realtime.cam`` sets ``keep`` once a face is tracked). ``name``: how messages call the
    file (``--save PATH``).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, keep: bool = True, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or str(self.path)
        self.keep = keep
        if not is_positive_number(fps):
            raise RealtimeError(f"video fps must be a positive number, got {fps!r}")
        self.fps = float(fps)
        reason = unwritable_reason(self.path)
        if reason is None and self.path.suffix.lower() not in VIDEO_SUFFIXES:
            reason = f"name it {', '.join(VIDEO_SUFFIXES)} (the container comes from the name)"
        if reason is None and not is_utf8_name(self.path):
            reason = NOT_UTF8
        if reason is not None:
            raise RealtimeError(f"cannot write video {self.path}: {reason}")
        self.frames = 0
        self._start_s: float | None = None  # stream time of the first frame written with at_s
        self._last: np.ndarray | None = None  # the last frame written, held over a live stream's gaps
        self.size: tuple[int, int] | None = None  # (width, height)
        self._writer: cv2.VideoWriter | None = None
        self._output: PendingOutput | None = None  # the temporary file until close
        self._closed = False

    def _open(self, w: int, h: int) -> cv2.VideoWriter:
        """The writer of the temporary file (its folder made only now, like the event files':
        a failed start makes nothing)."""
        try:
            self._output = PendingOutput(self.path, suffix=self.path.suffix)
        except OSError as exc:
            raise RealtimeError(f"cannot write video {self.path}: {exc.strerror or exc}") from None
        with opencv_quiet():  # (its own "[ERROR] ... Failed to initialize VideoWriter" beside ours)
            writer = cv2.VideoWriter(str(self._output.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            writer.release()
            self._finish(keep=False)
            raise RealtimeError(f"cannot write video {self.path} (mp4v, {w}x{h})")
        return writer

    def write(self, image_bgr: np.ndarray, at_s: float | None = None) -> None:
        """Append one BGR uint8 frame. With ``at_s``, its stream time (a live source, where the
        spotter sees only the frames it keeps up with), the frame goes to the file's frame of
        that time and the previous one is held until then (skipped when that slot is taken),
        so the video plays at the speed it was filmed and its times match the events'."""
        if self._closed:
            raise RealtimeError(f"video {self.path} is already closed")
        if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise RealtimeError(f"video frames must be BGR uint8 HxWx3, got {image_bgr.shape}")
        if self._writer is None:
            h, w = image_bgr.shape[:2]
            self._writer, self.size = self._open(w, h), (w, h)
        if at_s is not None:
            self._start_s = at_s if self._start_s is None else self._start_s
            slot = round((at_s - self._start_s) * self.fps)
            if slot < self.frames:
                return
            while self.frames < slot:  # the frames the spotter never saw: the last one it did
                self._put(self._last)
        if (image_bgr.shape[1], image_bgr.shape[0]) != self.size:
            image_bgr = cv2.resize(image_bgr, self.size, interpolation=cv2.INTER_AREA)
        self._last = np.ascontiguousarray(image_bgr)
        self._put(self._last)

    def _put(self, image: np.ndarray) -> None:
        """One frame to the writer; OpenCV's warning of a failed write is left to :meth:`close`'s check."""
        assert self._writer is not None
        with opencv_quiet():
            self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (safe to call twice): put it in place if :attr:`keep` and whole, else
        remove it; a video that does not read back whole is one :class:`RealtimeError` line."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:  # (no frame, or stopped while the first one opened the file)
            if self._output is not None:
                self._output.discard()
            return
        self._writer.release()
        self._writer = None
        problem = self._damage() if self.keep else None
        self._finish(keep=self.keep and problem is None)
        if problem is not None:
            raise RealtimeError(f"{self.name}: the video could not be written whole ({problem})")

    def _damage(self) -> str | None:
        """What is wrong with the temporary file as OpenCV reads it back, or None: its index
        must count every frame written (a full disk cuts an mp4 before its index)."""
        with opencv_quiet():
            cap = cv2.VideoCapture(str(self._output.tmp))
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
            cap.release()
        if count >= self.frames:  # (Ctrl-C between the writer's write and the count: one frame more)
            return None
        read = f"{count} of the {self.frames}" if count > 0 else f"none of the {self.frames}"
        return f"OpenCV reads back {read} frames written; a full disk or a file size limit?"

    def _finish(self, keep: bool) -> None:
        """Move the temporary file into place, or remove it."""
        assert self._output is not None
        if not keep:
            self._output.discard()
            return
        try:
            self._output.commit()
        except OSError as exc:
            raise RealtimeError(f"cannot write video {self.path}: {exc.strerror or exc}") from None

    def __enter__(self) -> "VideoSaver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _needs_x_server() -> bool:
    """Whether OpenCV's windows need an X server: its Qt build (the pip wheels) ships Qt's xcb
    platform plugin only, and Qt *aborts the process* (SIGABRT, no exception to catch) when it
    cannot connect, e.g. to a stale ``DISPLAY`` left by an ended ``ssh -X`` session, or with
    only ``WAYLAND_DISPLAY`` set. ``QT_QPA_PLATFORM`` set by the user is left to them."""
    framework = getattr(cv2, "currentUIFramework", lambda: "")()
    return framework.upper().startswith("QT") and not os.environ.get("QT_QPA_PLATFORM")


def no_x_server_at(display: str, timeout_s: float = 2.0) -> bool:
    """Whether ``display`` names an X server that does not answer. Read as libxcb reads it:
    ``[PROTOCOL/]HOST:N[.SCREEN]``, HOST empty or ``unix`` for the local socket
    ``/tmp/.X11-unix/XN`` (Linux's abstract one tried first, as xcb does), else TCP port
    6000 + N (an IPv6 HOST bare or in brackets). A value it cannot read is not refused
    (Qt is left to judge it); authorisation is not checked."""
    import re
    import socket

    match = re.fullmatch(r"(?:(?P<protocol>[A-Za-z]+)/)?(?P<host>.*):(?P<number>\d+)(?:\.\d+)?", display)
    if match is None:
        return False
    protocol, host, number = (match["protocol"] or "").lower(), match["host"], int(match["number"])
    if protocol == "unix" or (host in ("", "unix") and protocol in ("", "unix")):
        path = f"/tmp/.X11-unix/X{number}"
        for address in ("\0" + path, path):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout_s)
                    s.connect(address)
                return False
            except OSError:
                continue
        return True
    try:
        socket.create_connection((host.removeprefix("[").removesuffix("]") or "localhost", 6000 + number),
                                 timeout=timeout_s).close()
        return False
    except OSError:
        return True


class Display:
    """A ``cv2.imshow`` window for the CLI; refuses early when there is no screen.

    Failing in the constructor (not on the first frame, after the camera and model loaded)
    tells a user on a server or in a container at once to pass ``--headless``.
    """

    def __init__(self, title: str = "micro-expression spotter") -> None:
        self.title = title
        if sys.platform.startswith("linux"):
            display = os.environ.get("DISPLAY")
            if not (display or os.environ.get("WAYLAND_DISPLAY")):
                raise RealtimeError("no display available: use --headless")
            if _needs_x_server() and (not display or no_x_server_at(display)):
                where = f"no X server answers at DISPLAY={display}" if display else "DISPLAY is not set"
                raise RealtimeError(f"no display available: use --headless ({where})")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as err:  # headless OpenCV build, or the X server refused us
            raise RealtimeError("no display available: use --headless") from err
        self._open = True

    def show(self, image_bgr: np.ndarray) -> bool:
        """Show a frame; False once the user pressed q or Esc or closed the window."""
        if not self._open:
            return False
        try:
            cv2.imshow(self.title, image_bgr)
            key = cv2.waitKey(1) & 0xFF
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            visible = -1  # the window was destroyed under us
            key = -1
        if key in (ord("q"), ord("Q"), 27) or visible < 1:
            self.close()
            return False
        return True

    def close(self) -> None:
        """Close the window (safe to call twice)."""
        if getattr(self, "_open", False):
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # lets HighGUI process the destroy event
            except cv2.error:
                pass

    def __enter__(self) -> "Display":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
