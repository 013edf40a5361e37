"""The FGSL spotter: the trained network behind an engine (``engines.open``), live.

What it does with a batch of windows (:meth:`FGSLSpotter.process`)
------------------------------------------------------------------
1. Each window's crops (``[T, S, S, 3]`` RGB uint8, see :class:`~realtime.types.Window`) are
   resized to the model's ``image_size`` when the face tracker made them at another size
   (``INTER_AREA`` to shrink, ``INTER_LINEAR`` to enlarge), then normalised exactly as
   offline inference does (:func:`fgsl.data.video.normalise`: ImageNet mean/std, channels
   first ``[3, T, H, W]``).
2. All windows of all faces go to the engine in **one** ``infer`` call ``[B, 3, T, H, W]``
   (the batching docs/design.md asks for: one call per step, whatever the number of faces); with
   the chunk cache (the default, below) one ``encode_chunk`` call for all new chunks and one
   ``decode_window`` call for all windows instead.
3. Each window's ``scores`` / ``offsets`` are decoded by :func:`fgsl.decode.decode` (the same
   decoding as ``fgsl.infer``: per-point intervals, class-aware soft-NMS, score threshold).
4. Intervals are in model frames of the window (continuous, 0-based). A model frame ``x`` is
   mapped to the source frame ``window.indices[round(x)]`` and its stream time
   ``window.timestamps[round(x)]`` (the buffer already resampled the source to the model's
   fps, so this is where model frame ``round(x)`` came from).

   * onset / offset: the interval's start and end;
   * apex: the interval's **centre**, ``(start + end) / 2``. FGSL has no apex head; the
     decoder's own "apex" is the centre of the pyramid point that produced the interval,
     which says where the model anchored its guess rather than where the face peaked, so
     the live spotter reports the plain centre (offline ``fgsl.infer`` keeps the point's
     centre; MEGC scores onset and offset only);
   * label: the model's class name as a MEGC label (:data:`realtime.types.LABELS`); class
     names of the CAS(ME)^3 / SAMM emotion tables are folded into those as the data readers
     do; a model with any other class name is refused when the spotter is made;
   * kind: ``micro`` when the interval lasts at most 0.5 s (``(end - start) / fps`` in model
     frames, :data:`realtime.types.MICRO_MAX_S`, the rule the flow spotter follows too), else ``macro``.
     Nothing is dropped for being short: which intervals exist is the model's decision;
   * score: the decoded score (sigmoid probability after soft-NMS).

Threshold and ``--sensitivity``
-------------------------------
The score threshold is the weights' ``config.score_threshold`` unless one is given.
``sensitivity`` divides the threshold's *odds*: ``p / (1 - p)`` becomes ``p / (1 - p) / s``.
``s = 1`` keeps the threshold, ``s > 1`` lowers it (more, weaker candidates), ``s < 1``
raises it (fewer false alarms), and the result always stays a probability in (0, 1) (a
plain division of the probability would not). Same direction as the flow spotter's flag.

Finality: a window's intervals lie anywhere inside it, so a later window of the track can
report nothing before that window's start: :meth:`final_before` is
:func:`~realtime.spotters.base.next_window_start`.

Streaming: encode each 16-frame chunk once (docs/design.md, "Streaming FGSL")
-----------------------------------------------------------------------
The frozen encoder's output for a 16-frame chunk depends on that chunk alone, so with
``cached=True`` (the default when the engine serves ``encode_chunk``/``decode_window``) the
spotter keeps, per track, a ring of chunk features keyed by the chunk's model-frame position
in the track (:attr:`~realtime.types.Window.position`); for a batch of windows it encodes only
the chunks not in the ring (all faces' new chunks in one ``encode_chunk`` call), then decodes
every window from its chunks (one ``decode_window`` call). The result equals ``infer`` on the
window's clip (tests, every preset, torch and ONNX Runtime).

* Chunk boundaries: windows must start on chunk boundaries for chunks to be shared, so the
  cached spotter's stride is a multiple of 16 model frames (default 16: each new window brings
  one new chunk; the uncached default is a quarter window). Resampling to the model's fps
  happens before (the buffer), so chunks are 16 *model* frames whatever the camera's rate.
* Stream start: nothing is spotted before the first full window (T model frames), as
  uncached. Stream end / face lost: the track's last window is the last T frames, usually not
  on a chunk boundary, and a track shorter than T is padded by repeating its last frame;
  those chunks are encoded fresh (their positions never match a cached one).
* Memory: the ring holds at most ``T / 16`` chunks per track (:meth:`cache_bytes`), and is
  dropped in :meth:`end_track` when the face is lost.

Untrained weights: :meth:`FGSLSpotter.from_args` refuses them unless ``--allow-untrained``
is given, and :meth:`describe` then says so loudly.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from fgsl.config import CHUNK_FRAMES, FGSLConfig, is_positive_number
from fgsl.data.aligned import fit_crops, tracker_crop_size
from fgsl.data.datasets import CASME3_EMOTIONS, SAMM_EMOTIONS
from fgsl.data.video import nearest_frame, normalise
from fgsl.decode import Interval, decode
from fgsl.infer import MERGE_GAP_S, merge_windows, trained_crops, weights_folder

from ..types import LABELS, MICRO_MAX_S, Candidate, RealtimeError, Window
from .base import next_window_start

UNTRAINED_BANNER = "UNTRAINED WEIGHTS: candidates are meaningless (benchmarks only)"


def megc_label(name: str) -> str:
    """A model class name as a MEGC label (:data:`~realtime.types.LABELS`); ``ValueError`` if none."""
    key = name.strip().lower()
    if key in LABELS:
        return key
    for table in (CASME3_EMOTIONS, SAMM_EMOTIONS):
        if key in table:
            return table[key]
    raise ValueError(f"FGSL class {name!r} has no MEGC label ({', '.join(LABELS)})")


def scaled_threshold(threshold: float, sensitivity: float) -> float:
    """``threshold`` with its odds divided by ``sensitivity`` (see the module docstring)."""
    if not is_positive_number(sensitivity):
        raise ValueError(f"sensitivity must be a positive number, got {sensitivity}")
    if threshold <= 0 or threshold >= 1 or sensitivity == 1:
        return float(threshold)
    odds = threshold / (1 - threshold) / sensitivity
    return odds / (1 + odds)


def _weights_trained(engine: Any) -> bool | None:
    """Whether the engine's weights folder says trained; ``None`` when it has no folder."""
    from fgsl import weights

    folder = weights_folder(engine)
    return None if folder is None else weights.is_trained(folder)


#: Said when trained weights saw other crops than the live spotter feeds them.
CROPS_CAVEAT = ("trained on centre crops of face videos, not on the MediaPipe-aligned crops this spotter feeds: "
                "expect lower accuracy than offline fgsl.infer (docs/realtime.md)")


def model_crops(window: Window, cfg: FGSLConfig) -> np.ndarray:
    """A window's tracker crops at the model's size, ``[T, S, S, 3]`` RGB uint8, fitted as
    offline aligned reading fits them (:func:`fgsl.data.aligned.fit_crops`). The same for the live spotter and for the
    calibration windows of ``calib.collect``, which must be what the engine sees live."""
    crops = np.asarray(window.crops)
    if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8:
        raise RealtimeError(f"track {window.track}: window crops must be [T, S, S, 3] RGB uint8, "
                            f"got {crops.dtype} {list(crops.shape)}")
    if len(crops) != cfg.window_frames or len(window.indices) != cfg.window_frames:
        raise RealtimeError(f"track {window.track}: window of {len(crops)} frames, the FGSL model "
                            f"takes {cfg.window_frames}")
    return fit_crops(crops, cfg.image_size)


def window_clips(windows: list[Window], cfg: FGSLConfig) -> np.ndarray:
    """``[B, 3, T, H, W]`` float32 engine input: :func:`model_crops` ImageNet-normalised."""
    return np.stack([normalise(model_crops(w, cfg)) for w in windows])


class FGSLSpotter:
    """FGSL through an engine: windows of ``cfg.window_frames`` model frames every ``stride``.

    ``engine``: anything with the :class:`engines.base.Engine` protocol (``cfg``,
    ``infer``, ``describe``). ``threshold``: minimum score (default: the config's).
    ``stride``: model frames between windows (default one 16-frame chunk with the chunk cache,
    ``window // 4`` without it, as ``fgsl.infer``).
    ``sensitivity``: scales the threshold's odds (module docstring). ``trained``: whether the
    weights are trained; ``None`` reads it from the engine's weights folder when it has one.
    """

    name = "fgsl"
    #: Events closer than this are one movement (``realtime.events.EventMerger``), as offline.
    merge_gap_s = MERGE_GAP_S

    def __init__(self, engine: Any, threshold: float | None = None, stride: int | None = None,
                 sensitivity: float = 1.0, trained: bool | None = None, cached: bool | None = None) -> None:
        cfg: FGSLConfig = engine.cfg
        self.engine = engine
        self.cfg = cfg
        self.window = cfg.window_frames
        self.cached = hasattr(engine, "encode_chunk") and hasattr(engine, "decode_window") if cached is None else cached
        if self.cached and not hasattr(engine, "encode_chunk"):
            raise ValueError("this engine serves no encode_chunk/decode_window graphs: use cached=False")
        default = CHUNK_FRAMES if self.cached else max(1, self.window // 4)
        self.stride = default if stride is None else int(stride)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"fgsl stride must be 1..{self.window} (the window), got {stride}")
        if self.cached and self.stride % CHUNK_FRAMES:
            raise ValueError(f"the cached fgsl spotter needs a stride that is a multiple of {CHUNK_FRAMES} "
                             f"(chunk-aligned windows), got {self.stride}")
        self._rings: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        #: Work done, for the benchmark: chunks encoded, windows decoded, and time in each (ms).
        self.work: dict[str, list[float]] = {"encode_ms": [], "decode_ms": [], "infer_ms": []}
        self.encoded_chunks = 0
        self.fps = float(cfg.fps)
        self.crop_size = tracker_crop_size(cfg.image_size)  # model_crops shrinks it to the model's
        base = cfg.score_threshold if threshold is None else float(threshold)
        if not 0 <= base < 1:
            raise ValueError(f"fgsl score threshold must be in [0, 1), got {base}")
        self.sensitivity = float(sensitivity)
        self.threshold = scaled_threshold(base, self.sensitivity)
        self.labels = tuple(megc_label(c) for c in cfg.classes)
        self.trained = _weights_trained(engine) if trained is None else bool(trained)
        self.trained_on_crops = trained_crops(engine)  # "centre", "aligned" or None: see describe()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FGSLSpotter":
        """From ``realtime.cam``-style flags: ``weights``, ``allow_untrained``, ``preset``,
        ``backend``, ``engine_device``, ``sensitivity``.

        ``--weights DIR`` opens that folder with ``engines.open`` (untrained weights there are
        refused with :class:`fgsl.weights.WeightsError` unless ``--allow-untrained``);
        without weights, ``--allow-untrained`` builds the ``--preset`` network with seed 0
        (``fgsl.infer``'s :func:`~fgsl.infer.open_engine`), and nothing at all is a
        :class:`fgsl.cli.UsageError`.
        """
        from fgsl.infer import open_engine

        engine, trained = open_engine(getattr(args, "weights", None),
                                      allow_untrained=bool(getattr(args, "allow_untrained", False)),
                                      preset_name=getattr(args, "preset", None),
                                      backend=getattr(args, "backend", None) or "auto",
                                      device=getattr(args, "engine_device", None))
        sensitivity = getattr(args, "sensitivity", None)
        try:
            return cls(engine, sensitivity=1.0 if sensitivity is None else float(sensitivity), trained=trained,
                       cached=False if getattr(args, "no_cache", False) else None)
        except ValueError as exc:  # bad --sensitivity, or a model whose classes are not MEGC's
            raise RealtimeError(str(exc)) from None

    # ------------------------------------------------------------------ protocol
    def describe(self) -> str:
        d = self.engine.describe()
        where = f"{d.get('backend', '?')} {d.get('precision', '')} on {d.get('device', '?')}".replace("  ", " ")
        text = (f"FGSL spotter (preset {d.get('preset', self.cfg.name)!r}, {where}, "
                f"weights {d.get('source') or 'in memory'}, window {self.window} frames every {self.stride}, "
                f"{'chunk cache' if self.cached else 'no cache'}, score >= {self.threshold:.3g})")
        if self.trained is False:
            text += f" [{UNTRAINED_BANNER}]"
        elif self.trained is None:
            text += " [weights of unknown origin: not read from a weights folder]"
        elif self.trained_on_crops == "centre":
            text += f" [{CROPS_CAVEAT}]"
        return text

    def signals(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """FGSL scores intervals, not a per-frame motion signal: none to plot."""
        return {}

    def signal_threshold(self) -> None:
        return None

    def process(self, windows: list[Window]) -> list[list[Candidate]]:
        """Candidates of each window; all windows (any tracks) in one engine call.

        A track's last window over exactly the frames of its last regular one
        (:attr:`~realtime.types.Window.repeats_last`) tells a model that sees whole windows
        nothing new: it is not run again."""
        fresh = [w for w in windows if not w.repeats_last]
        if not fresh:
            return [[] for _ in windows]
        intervals = iter(decode(self.infer(fresh), self.cfg, threshold=self.threshold))
        # One interval per movement within a window, as offline (fgsl.infer.merge_windows):
        # decoding keeps a ranked list in which one movement's ramps and other classes are
        # further entries, and each would become an event of its own.
        return [[] if w.repeats_last else
                [self._candidate(w, iv) for iv in merge_windows(next(intervals), self.cfg, self.threshold)]
                for w in windows]

    def final_before(self, window: Window) -> int:
        return next_window_start(window, self.stride)

    def end_track(self, track: int) -> None:
        """The face is gone: drop its chunk ring."""
        self._rings.pop(track, None)

    def cache_bytes(self, track: int | None = None) -> int:
        """Bytes held in chunk rings (one track, or all)."""
        rings = [self._rings.get(track, {})] if track is not None else list(self._rings.values())
        return sum(f.nbytes + t.nbytes for ring in rings for f, t in ring.values())

    # ------------------------------------------------------------------ steps
    def clips(self, windows: list[Window]) -> np.ndarray:
        """``[B, 3, T, H, W]`` float32: the windows' crops resized and ImageNet-normalised."""
        return window_clips(windows, self.cfg)

    def infer(self, windows: list[Window]) -> dict[str, np.ndarray]:
        """The engine's raw outputs (``scores`` logits, ``offsets``) for ``windows``.

        Uncached: one ``infer`` call on the windows' clips. Cached: one ``encode_chunk`` call
        for the chunks no ring holds yet, one ``decode_window`` call for all windows.
        """
        if not self.cached:
            t0 = time.perf_counter()
            out = self.engine.infer(self.clips(windows))
            self.work["infer_ms"].append((time.perf_counter() - t0) * 1000)
            return out
        self._encode_missing(windows)
        features = [self._window_features(w) for w in windows]
        t0 = time.perf_counter()
        out = self.engine.decode_window(np.stack([f for f, _ in features]), np.stack([t for _, t in features]))
        self.work["decode_ms"].append((time.perf_counter() - t0) * 1000)
        for w in windows:
            self._evict(w)
        return out

    def _chunk_keys(self, window: Window) -> list[int]:
        return [window.position + CHUNK_FRAMES * j for j in range(self.window // CHUNK_FRAMES)]

    def _encode_missing(self, windows: list[Window]) -> None:
        todo: list[tuple[int, int]] = []  # (track, chunk position)
        chunks: list[np.ndarray] = []
        for w in windows:
            ring = self._rings.setdefault(w.track, {})
            crops = None
            for j, pos in enumerate(self._chunk_keys(w)):
                if pos in ring or (w.track, pos) in todo:
                    continue
                crops = model_crops(w, self.cfg) if crops is None else crops
                chunks.append(normalise(crops[j * CHUNK_FRAMES:(j + 1) * CHUNK_FRAMES]))
                todo.append((w.track, pos))
        if not todo:
            return
        t0 = time.perf_counter()
        out = self.engine.encode_chunk(np.stack(chunks))
        self.work["encode_ms"].append((time.perf_counter() - t0) * 1000)
        self.encoded_chunks += len(todo)
        for k, (track, pos) in enumerate(todo):
            self._rings[track][pos] = (out["final"][k], out["taps"][k])

    def _window_features(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``final [L, D]`` and ``taps [n_taps, L, D]`` of a window, from its chunks in the ring."""
        ring = self._rings[window.track]
        parts = [ring[pos] for pos in self._chunk_keys(window)]
        return np.concatenate([f for f, _ in parts], axis=0), np.concatenate([t for _, t in parts], axis=1)

    def _evict(self, window: Window) -> None:
        """Keep only chunks a later window of the track can still use (bounded memory)."""
        ring = self._rings.get(window.track, {})
        keep_from = window.position + self.stride
        for pos in [p for p in ring if p < keep_from or window.final]:
            del ring[pos]

    def _candidate(self, window: Window, iv: Interval) -> Candidate:
        last = len(window.indices) - 1

        def at(x: float) -> int:
            return int(min(max(nearest_frame(x), 0), last))

        on, apex, off = at(iv.onset), at((iv.onset + iv.offset) / 2), at(iv.offset)
        idx, ts = window.indices, window.timestamps
        duration = (iv.offset - iv.onset) / self.fps
        return Candidate(
            track=window.track, onset=int(idx[on]), apex=int(idx[apex]), offset=int(idx[off]),
            onset_s=float(ts[on]), apex_s=float(ts[apex]), offset_s=float(ts[off]),
            label=self.labels[iv.label], score=round(float(iv.score), 4),
            kind="micro" if duration <= MICRO_MAX_S else "macro",
        )
