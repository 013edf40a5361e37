"""The default, training-free spotter: optical flow in facial regions of the aligned crop.

Why this design (and where it comes from)
-----------------------------------------
Classic micro-expression spotting compares each frame with frames a fixed lag ``k`` before
and after it ("feature difference analysis", Moilanen, Zhao and Pietikäinen, ICPR 2014; the
MEGC baselines by He et al. 2020 use optical flow in regions of interest the same way). A
movement that starts after ``t-k`` and is over by ``t+k`` shows at ``t`` with its full size,
while slow drifts cancel. We compute, per model frame ``t`` and per region ``r``,

    p_r(t) = position of region r: the running sum of its mean optical flow between
             consecutive crops (DIS optical flow, OpenCV), each minus an affine fit to the
             flow of the whole face (head motion the alignment did not remove),

one flow per frame, and the band-limited difference

    d_r(t) = p_r(t) - (p_r(t-k) + p_r(t+k)) / 2     (displacement at t relative to t-k and t+k)

Positions come from consecutive-frame flow, not from one flow across the lag: on faces that
talk and move, a flow across several frames is often wrong where a frame-to-frame flow is
not, and summing per-frame flows lets any lag be had for one flow per frame (on synthetic
moving faces the change alone raised spotting F1 from 0.56 to 0.64 at a lag of 1/3 s; see
docs/benchmarks.md).

Each region is judged against its own recent noise: ``s(t) = max_r (|d_r(t)| - median_r) /
spread_r`` with the median and robust spread (1.4826 x MAD, at least ``floor_px / c``) of that
region's last ``history_s`` seconds, lightly smoothed; a talking mouth then does not hide a
brow movement. On a still face the spread is tiny and the floor is the threshold: 0.2 px lets
3 px injected movements through on every shared face (0.35 px missed more than half of them
on one), and still faces without movements, with or without sensor noise, raise no event. A
peak of ``s`` above ``c`` (``threshold_mads``, divided by the sensitivity) is a movement's
apex ``a``. Its extent comes from projecting every ``d(t)`` on the
apex pattern ``d(a)``: ``q(t) = <d(t), d(a)> / |d(a)|^2`` is 1 at the apex and falls to 0
where the face is back to its pre-movement state, so onset and offset are where ``q`` drops
below ``EXTENT`` on either side. A brief movement leaves lobes of -0.5 at ``a -/+ k`` (there
the frame a lag away is the apex); a lasting change of expression (a step, not a there-and-back
movement) gives a lobe of -1 and those are not movements of their own and are dropped
(``STEP_LOBE``). After a movement is taken, the ``k`` frames either side of it are too: its
lobes there are not movements of their own. Across windows the merger does the same
(``merge_gap_s`` = ``k`` / fps): two windows each reporting a piece of one movement gave two
overlapping events (IoU 0.27) on the two-face video, and on a 12 px moving set 6 pairs within
``k``, 5 of them a hit beside a false alarm (docs/benchmarks.md).

The lag ``k`` is 1/6 s: short enough that talking and slow changes of expression cancel
(with 1/3 s, 64 of 116 injected movements on talking faces stayed under the threshold),
long enough to cover the rise or fall of most micro-expressions (0.5 s at most in all).
Lag and threshold were chosen on synthetic moving-face sets from the training part of the
sources and checked on held-out ones (docs/benchmarks.md).

Blinks are not micro-expressions (CAS(ME)^2 and SAMM do not annotate them): a candidate
whose strongest region is an eyelid and during which MediaPipe's ``eyeBlink`` blendshape
rises by ``BLINK_RISE`` is dropped.

Frame edges: where the aligned crop reaches past the frame (a tightly cropped face video, a
chin at the bottom of the picture) the tracker fills it with black, and that edge moves
against the face whenever the head does; the flow near it follows the edge. Regions not
wholly in the picture (``EDGE_MARGIN_PX`` clear of its edge) for a whole window are left out
of that window, and the head-motion fit uses only pixels in the picture: on still faces that
sway 3 or 6 px in tightly cropped synthetic videos this took the false alarms, all in the
chin region, from 5.2 and 10.4 per minute to none (docs/benchmarks.md).

Durations: 0.065-0.5 s is a micro-expression (the common definition used by CAS(ME)^2 and
SAMM: under 0.5 s); longer ones up to ``macro_max_s`` (4 s) are reported as ``macro``;
shorter ones (one-frame glitches) and longer ones (a held expression, not a movement) are
dropped.

Emotion: from the change of MediaPipe blendshapes between onset and apex
(:data:`EMOTION_BLENDSHAPES`, after the FACS action units that define the MEGC classes:
AU12/AU6 positive, AU1+2/AU5/AU26 surprise, AU4/AU15/AU9 negative); ``others`` when no class
rises by at least ``MIN_BLENDSHAPE_RISE`` or two classes are within ``UNSURE_MARGIN``.

Windows: ``window`` model frames every ``stride``; frame ``t`` has a signal only when
``t-k`` and ``t+k`` lie in the window, and an apex is only taken in ``[2k, window-2k)`` where
both its lobes can be inspected (so ``stride <= window - 4k``: every apex falls in some
window). Every peak of the window, inside that range or not, claims its movement and lobes,
so a window never reports the lobe of an apex it cannot take. Candidates then lie in
``[k, window-k)`` and a later window never reports anything that ends before its own
``start + k``: that is :meth:`FlowSpotter.final_before`. A track's last window
(:meth:`realtime.buffer.TrackBuffer.finish`) starts wherever the track's last ``window``
frames do, up to ``stride - 1`` frames before the next regular one would have, so it drops
what ends before the point its predecessor promised (else a movement already emitted came
out twice). Flow per frame pair is cached per track (the dense field: each window measures
its regions with its own boxes), so overlapping windows cost one flow per new frame.

Track ends: the first window takes apexes from ``k + 1`` and the last up to ``window - k - 2``,
where one of an apex's lobes has no signal. There the brief movement's other lobe may be what
peaks: the movement itself peaks beyond the signal's reach, and its lobe, ``k`` frames
before or after, looks like a movement of its own (reported ``k`` frames early or late, a
false alarm and a miss). Such an apex must show its displacement against the side it can
see: the one-sided difference (``p(a) - p(a-k)`` at a track's end) must carry at least
``ONE_SIDED`` of ``d(a)``. For a true apex it carries all of it (more when the movement has
not ended by ``a + k``); for the lobe of a later apex it carries nothing.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from fgsl.config import is_positive_number

from ..face import BLENDSHAPE_NAMES
from ..types import MICRO_MAX_S, MIN_MOVEMENT_S, Candidate, Window
from .base import next_window_start

#: Regions of interest: MediaPipe face-mesh landmark indices whose mean position (in the
#: aligned crop) is the region's centre. Names are in the image's left/right.
REGIONS: dict[str, tuple[int, ...]] = {
    "brow_outer_left": (70, 63),
    "brow_left": (105, 66),
    "brow_inner_left": (107, 55),
    "brow_inner_right": (336, 285),
    "brow_right": (334, 296),
    "brow_outer_right": (300, 293),
    "lid_left": (159, 158),
    "lid_right": (386, 385),
    "cheek_left": (205, 50),
    "cheek_right": (425, 280),
    "mouth_corner_left": (61, 146),
    "mouth_corner_right": (291, 375),
    "chin": (199, 175),
}
REGION_HALF = 0.075  # half side of a region's box, fraction of the crop

#: MediaPipe blendshape names whose rise signals each MEGC class.
EMOTION_BLENDSHAPES: dict[str, tuple[str, ...]] = {
    "positive": ("mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"),
    "surprise": ("browInnerUp", "browOuterUpLeft", "browOuterUpRight", "eyeWideLeft", "eyeWideRight", "jawOpen"),
    "negative": ("browDownLeft", "browDownRight", "mouthFrownLeft", "mouthFrownRight", "noseSneerLeft",
                 "noseSneerRight"),
}
MIN_BLENDSHAPE_RISE = 0.02
UNSURE_MARGIN = 0.01

#: ``q`` below this: back to the pre-movement state. ``d`` is band-passed (lag ``k``), so ``q``
#: is narrower than the movement: at 0.3 (before 2026-11-27) movements of 11-16 frames came out
#: about 7 frames long; 0.2 widens them a little (mean IoU with the truth 0.71 -> 0.74 on a
#: fresh moving-face set) and lowering it further merges noise into them (docs/benchmarks.md).
EXTENT = 0.2
STEP_LOBE = -0.8  # a brief movement has lobes of -0.5 at apex -/+ k; a lasting change reaches -1
#: Share of ``d(a)`` the one-sided difference must carry where one lobe of apex ``a`` has no
#: signal (a track's ends, see the module docstring): about 1 for a true apex, about 0 or less
#: for the lobe of a movement that peaks beyond the signal.
ONE_SIDED = 0.5
BLINK_REGIONS = ("lid_left", "lid_right")
BLINK_SHAPES = ("eyeBlinkLeft", "eyeBlinkRight")
BLINK_RISE = 0.3  # rise of an eyeBlink blendshape (0..1) that makes a lid movement a blink
#: Pixels (at a 112 px crop) kept clear of the frame's edge: dense flow there is pulled by the
#: edge, which moves against the face whenever the head does.
EDGE_MARGIN_PX = 4


@dataclass(frozen=True)
class FlowSettings:
    """Tunable parameters (defaults chosen on synthetic validation videos, see docs)."""

    fps: float = 30.0
    window: int = 48
    stride: int = 8
    lag_s: float = 1 / 6
    threshold_mads: float = 3.0  # c: robust deviations above a region's median
    floor_px: float = 0.2  # absolute threshold in crop pixels at a 112 px crop (see docs)
    history_s: float = 10.0  # how much of the track's signal the threshold adapts to
    min_s: float = MIN_MOVEMENT_S
    micro_max_s: float = MICRO_MAX_S
    macro_max_s: float = 4.0

    @property
    def lag(self) -> int:
        return max(1, round(self.lag_s * self.fps))

    def __post_init__(self) -> None:
        if not 1 <= self.stride <= self.window - 4 * self.lag:
            raise ValueError(f"flow stride must be 1..window - 4 x lag ({self.window - 4 * self.lag}), "
                             f"got {self.stride} (window {self.window}, lag {self.lag})")


class _Track:
    """Per-track memory: flow per frame pair, and the recent signal for the threshold."""

    def __init__(self, history: int) -> None:
        self.flows: dict[tuple[int, int], np.ndarray] = {}  # (frame, next frame) -> [S, S, 2] flow
        self.signal: deque[np.ndarray] = deque(maxlen=history)  # [R] magnitudes per frame
        self.signal_until = -1  # last source frame whose signal value is in ``signal``
        self.windows = 0  # windows seen (the first may take apexes earlier than 2k)
        self.promised = -1  # final_before of the last regular window: the last window reports nothing before it


def _gray(crop: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)


class FlowSpotter:
    """Training-free ROI optical-flow spotter (see the module docstring)."""

    name = "flow"
    crop_size = 112
    trained = None  # no weights

    def __init__(self, settings: FlowSettings | None = None, sensitivity: float = 1.0) -> None:
        if not is_positive_number(sensitivity):
            raise ValueError(f"sensitivity must be a positive number, got {sensitivity}")
        self.settings = settings or FlowSettings()
        self.sensitivity = sensitivity
        self.window, self.stride, self.fps = self.settings.window, self.settings.stride, self.settings.fps
        # Candidates of one track within a lag of each other are one movement: what one window's
        # peak claims (its lobes, ``k`` frames either side), the merger claims across windows.
        self.merge_gap_s = self.settings.lag / self.settings.fps
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._tracks: dict[int, _Track] = {}
        self._signals: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # see signals()

    # ------------------------------------------------------------------ protocol
    def describe(self) -> str:
        return "training-free optical-flow spotter (no weights; emotion guessed from blendshapes)"

    def signals(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Each track's last window: its smoothed strongest-region excess over the noise, in
        robust deviations (what :meth:`signal_threshold` applies to), at its source frames."""
        return dict(self._signals)

    def process(self, windows: list[Window]) -> list[list[Candidate]]:
        return [self._process_one(w) for w in windows]

    def final_before(self, window: Window) -> int:
        ahead = self.stride + self.settings.lag
        if window.final or ahead >= len(window.indices):
            return next_window_start(window, self.stride)
        return int(window.indices[ahead])

    def end_track(self, track: int) -> None:
        self._tracks.pop(track, None)
        self._signals.pop(track, None)

    # ------------------------------------------------------------------ signal
    def _region_boxes(self, window: Window) -> np.ndarray:
        """``[R, 4]`` integer boxes (x0, y0, x1, y1) from the window's median landmarks."""
        size = window.crops.shape[1]
        marks = np.median(window.landmarks, axis=0)
        half = max(2, round(REGION_HALF * size))
        boxes = []
        for ids in REGIONS.values():
            cx, cy = marks[list(ids)].mean(axis=0)
            x0 = int(np.clip(round(cx) - half, 0, size - 2))
            y0 = int(np.clip(round(cy) - half, 0, size - 2))
            boxes.append((x0, y0, min(size, x0 + 2 * half + 1), min(size, y0 + 2 * half + 1)))
        return np.array(boxes)

    @staticmethod
    def _usable(window: Window) -> np.ndarray:
        """``[S, S]`` bool: the crop pixels that show the frame in every frame of the window,
        at least ``EDGE_MARGIN_PX`` from its edge (all pixels when the window does not say)."""
        size = window.crops.shape[1]
        if window.inside is None:
            return np.ones((size, size), bool)
        margin = max(1, round(EDGE_MARGIN_PX * size / 112))
        kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
        return cv2.erode(window.inside.all(axis=0).astype(np.uint8), kernel).astype(bool)

    @staticmethod
    def _region_flow(flows: np.ndarray, boxes: np.ndarray, face: tuple[int, int, int, int],
                     usable: np.ndarray) -> np.ndarray:
        """``[T, R, 2]`` mean flow per region of ``flows [T, S, S, 2]`` after removing the
        face's global (affine) motion, fitted on the ``usable`` pixels of the face.

        The alignment removes most head motion, but its smoothing lags a moving head and a
        similarity cannot follow yaw or pitch; an affine fit to the flow over the face
        (least squares on a grid) takes out what is left, so regions report deformation.
        The affine model is linear, so its mean over a box is its value at the box's centre.
        """
        x0, y0, x1, y1 = face
        step = max(2, (x1 - x0) // 12)
        ys, xs = (a.ravel() for a in np.mgrid[y0:y1:step, x0:x1:step])
        keep = usable[ys, xs]
        if keep.sum() >= 12:  # enough of the face left to fit six parameters
            ys, xs = ys[keep], xs[keep]
        grid = np.stack([xs, ys, np.ones(xs.size)], axis=1).astype(np.float32)
        count = len(flows)
        target = flows[:, ys, xs].transpose(1, 0, 2).reshape(len(grid), count * 2)
        affine = np.linalg.lstsq(grid, target, rcond=None)[0].reshape(3, count, 2)  # [3, T, 2]
        out = np.empty((count, len(boxes), 2), np.float32)
        for r, (bx0, by0, bx1, by1) in enumerate(boxes):
            centre = np.array([(bx0 + bx1 - 1) / 2, (by0 + by1 - 1) / 2, 1.0], np.float32)
            out[:, r] = flows[:, by0:by1, bx0:bx1].mean(axis=(1, 2)) - np.einsum("k,ktc->tc", centre, affine)
        return out

    def signal(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``d [T, R, 2]`` (NaN where undefined), ``s [T]``, the strongest region per frame and
        the regions' positions ``p [T, R, 2]`` (relative to the window's first frame)."""
        cfg = self.settings
        k, n = cfg.lag, len(window.indices)
        state = self._tracks.setdefault(window.track, _Track(max(1, round(cfg.history_s * cfg.fps))))
        boxes = self._region_boxes(window)
        size = window.crops.shape[1]
        usable = self._usable(window)
        # A region not wholly in the picture all window long is not measured (its values are
        # NaN in the noise history and it takes no part in the signal).
        seen = np.array([usable[y0:y1, x0:x1].all() for x0, y0, x1, y1 in boxes])
        lo = np.clip(np.min(window.landmarks, axis=(0, 1)), 0, size - 1).astype(int)
        hi = np.clip(np.max(window.landmarks, axis=(0, 1)), 1, size).astype(int)
        face = (lo[0], lo[1], max(hi[0], lo[0] + 2), max(hi[1], lo[1] + 2))
        dense = np.zeros((n, size, size, 2), np.float32)
        for t in range(1, n):
            key = (int(window.indices[t - 1]), int(window.indices[t]))
            if key not in state.flows:
                state.flows[key] = self._flow.calc(_gray(window.crops[t - 1]), _gray(window.crops[t]), None)
            dense[t] = state.flows[key]
        steps = self._region_flow(dense, boxes, face, usable)
        steps[0] = 0
        # Keep the cache bounded: only pairs that can still appear in a later window.
        oldest = int(window.indices[min(self.stride, n - 1)])
        for key in [key for key in state.flows if key[0] < oldest]:
            del state.flows[key]
        position = np.cumsum(steps, axis=0)  # relative to the window's first frame
        d = np.full_like(steps, np.nan)
        d[k:n - k] = position[k:n - k] - 0.5 * (position[:n - 2 * k] + position[2 * k:])
        d[k:n - k, ~seen] = 0.0
        magnitude = np.linalg.norm(d, axis=2)  # [T, R]
        magnitude[:, ~seen] = np.nan
        # Feed each region's noise estimate with each source frame once.
        for t in range(k, n - k):
            if window.indices[t] > state.signal_until:
                state.signal.append(magnitude[t].copy())
                state.signal_until = int(window.indices[t])
        history = np.stack(state.signal)
        with warnings.catch_warnings():  # a region never seen yet has an all-NaN history
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(history, axis=0)
            spread = 1.4826 * np.nanmedian(np.abs(history - median), axis=0)
        median, spread = np.nan_to_num(median), np.nan_to_num(spread)
        floor = cfg.floor_px * size / 112
        scale = np.maximum(spread, floor / cfg.threshold_mads)
        per_region = np.nan_to_num((magnitude - median) / scale, nan=-np.inf)
        strongest = per_region.argmax(axis=1)
        excess = per_region.max(axis=1)
        smooth = excess.copy()
        smooth[k + 1:n - k - 1] = 0.25 * excess[k:n - k - 2] + 0.5 * excess[k + 1:n - k - 1] + 0.25 * excess[k + 2:n - k]
        self._signals[window.track] = (window.indices[k:n - k].copy(), smooth[k:n - k].copy())
        return d, smooth, strongest, position

    def signal_threshold(self) -> float:
        """Robust deviations above a region's median that make a movement."""
        return self.settings.threshold_mads / self.sensitivity

    # ------------------------------------------------------------------ candidates
    def _process_one(self, window: Window) -> list[Candidate]:
        cfg = self.settings
        k, n = cfg.lag, len(window.indices)
        d, s, strongest, position = self.signal(window)
        theta = self.signal_threshold()
        # Apexes only where both side lobes (apex -/+ k) can be inspected: [2k, n-2k). No
        # window comes before a track's first or after its last, so those also take the
        # apexes near the track's ends, with whatever lobe can be inspected.
        state = self._tracks[window.track]
        state.windows += 1
        valid = np.arange(k + 1 if state.windows == 1 else 2 * k, n - k - 1 if window.final else n - 2 * k)
        out: list[Candidate] = []
        taken = np.zeros(n, bool)
        # Every peak of the window claims its movement (and the lobes either side of it), but
        # only those in ``valid`` become candidates: else a window whose range ends between
        # a movement's lobe and its apex reports the lobe, and the next window, which sees
        # the apex, cannot take that back.
        emit = np.zeros(n, bool)
        emit[valid] = True
        peaks = np.arange(k, n - k)
        for a in peaks[np.argsort(-s[peaks])]:
            if s[a] < theta:
                break
            if taken[a]:
                continue
            pattern = d[a]
            q = np.einsum("trc,rc->t", np.nan_to_num(d), pattern) / max(float((pattern**2).sum()), 1e-9)
            onset, offset = a, a
            while onset > k and q[onset] > EXTENT:
                onset -= 1
            while offset < n - k - 1 and q[offset] > EXTENT:
                offset += 1
            taken[max(0, onset - k):offset + k + 1] = True  # with the movement's lobes
            truncated = (q[onset] > EXTENT or q[offset] > EXTENT) and not window.final
            lobe = q[max(k, a - 2 * k):min(n - k, a + 2 * k + 1)].min()
            if truncated or lobe < STEP_LOBE or not emit[a]:
                continue
            if list(REGIONS)[strongest[a]] in BLINK_REGIONS and self.blink(window.blendshapes, onset, offset):
                continue
            if not self._seen_from_one_side(d, position, a, k):
                continue
            cand = self._candidate(window, onset, a, offset, float(s[a] / theta))
            if cand is not None:
                out.append(cand)
        if window.final:  # it may start before the next regular window would have (module docstring)
            out = [c for c in out if c.offset >= state.promised]
        else:
            state.promised = self.final_before(window)
        return out

    @staticmethod
    def _seen_from_one_side(d: np.ndarray, position: np.ndarray, a: int, k: int) -> bool:
        """Whether apex ``a`` is a movement's own peak where one of its lobes has no signal
        (``a - k < k`` or ``a + k >= n - k``): the difference against the side it can see must
        carry ``ONE_SIDED`` of ``d(a)`` (always true where both lobes have a signal)."""
        n = len(d)
        if a - k >= k and a + k < n - k:
            return True
        other = a + k if a - k < k else a - k  # the frame a lag away on the side that has one
        one_sided = np.nan_to_num(position[a] - position[other])
        pattern = np.nan_to_num(d[a])
        return float((one_sided * pattern).sum()) >= ONE_SIDED * max(float((pattern**2).sum()), 1e-9)

    def _candidate(self, window: Window, onset: int, apex: int, offset: int, strength: float) -> Candidate | None:
        cfg = self.settings
        idx, ts = window.indices, window.timestamps
        duration = (offset - onset) / cfg.fps
        if duration < cfg.min_s or duration > cfg.macro_max_s:
            return None
        kind = "micro" if duration <= cfg.micro_max_s else "macro"
        score = float(1 - np.exp(-(strength - 1) * 2)) * 0.5 + 0.5  # 0.5 at the threshold, ->1
        return Candidate(track=window.track, onset=int(idx[onset]), apex=int(idx[apex]), offset=int(idx[offset]),
                         onset_s=float(ts[onset]), apex_s=float(ts[apex]), offset_s=float(ts[offset]),
                         label=self.emotion(window.blendshapes[onset], window.blendshapes[apex]),
                         score=round(score, 4), kind=kind)

    @staticmethod
    def blink(blendshapes: np.ndarray, onset: int, offset: int) -> bool:
        """Whether an ``eyeBlink`` blendshape rises by ``BLINK_RISE`` within ``[onset, offset]``
        (two frames either side, as blendshapes and flow need not peak together)."""
        eyes = blendshapes[:, [BLENDSHAPE_NAMES.index(name) for name in BLINK_SHAPES]]
        lo, hi = max(0, onset - 2), min(len(eyes) - 1, offset + 2)
        rise = eyes[lo:hi + 1].max(axis=0) - np.minimum(eyes[lo], eyes[hi])
        return bool(rise.max() >= BLINK_RISE)

    def emotion(self, before: np.ndarray, apex: np.ndarray) -> str:
        """MEGC class from the blendshape change onset -> apex; ``others`` when unsure."""
        rise = dict(zip(BLENDSHAPE_NAMES, (apex - before).tolist()))
        evidence = {label: max(rise.get(n, 0.0) for n in names) for label, names in EMOTION_BLENDSHAPES.items()}
        ranked = sorted(evidence.items(), key=lambda kv: -kv[1])
        (best, top), (_, second) = ranked[0], ranked[1]
        if top < MIN_BLENDSHAPE_RISE or top - second < UNSURE_MARGIN:
            return "others"
        return best
