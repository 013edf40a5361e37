"""Streaming FGSL: the live spotter's per-chunk cache equals the whole-model path.

Real face video through the real face pipeline (MediaPipe crops at each preset's size), IGA
branches given non-zero weights (they start at zero, which would hide the tapped blocks).
For every window, the cached path (``encode_chunk`` once per chunk, ``decode_window`` from
the ring) must give the engine's ``infer`` on the same clip within 1e-5, and the same
decoded intervals.
"""

from __future__ import annotations

import numpy as np
import pytest

import engines
from engines.torch_backend import TorchEngine
from fgsl.config import CHUNK_FRAMES, preset
from fgsl.decode import decode
from fgsl.model import build
from realtime.buffer import Buffers
from realtime.spotters.fgsl import FGSLSpotter
from tests.conftest import randomise_adapters, track_faces

TWO_FACES = "liveportrait_d18_d19_two_faces_sidebyside.mp4"


def engine_for(name: str, backend: str = "torch", **overrides):
    model = build(preset(name, **overrides), seed=0)
    randomise_adapters(model)
    if backend == "torch":
        return TorchEngine(model)
    return engines.open_model(model, backend=backend, source=f"test {name}")


def feed(spotter: FGSLSpotter, faces_per_frame) -> list:
    """Push frames through buffers; every completed batch of windows goes through the spotter
    (cached) and is compared with the engine's whole-model output on the same clips."""
    buffers = Buffers(spotter.window, spotter.stride, spotter.fps)
    seen = []
    for faces in faces_per_frame:
        windows = buffers.push(faces)
        if windows:
            seen.append((windows, spotter.infer(windows)))
    final = buffers.end_all()
    if final:
        seen.append((final, spotter.infer(final)))
    return seen


def assert_same(spotter: FGSLSpotter, seen, tol: float = 1e-5) -> int:
    count = 0
    for windows, cached in seen:
        whole = spotter.engine.infer(spotter.clips(windows))
        for key in ("scores", "offsets"):
            assert np.abs(cached[key] - whole[key]).max() <= tol, key
        assert decode(cached, spotter.cfg, threshold=0.0) == decode(whole, spotter.cfg, threshold=0.0)
        count += len(windows)
    return count


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_cached_equals_whole_model_on_two_real_faces_tiny(backend):
    """Tiny preset, 32-frame windows of two real faces, 120 frames: many shared chunks."""
    engine = engine_for("tiny", backend)
    assert engine.describe()["backend"] == backend
    spotter = FGSLSpotter(engine, cached=True)
    faces = track_faces(TWO_FACES, 120, max_faces=2, size=spotter.crop_size)
    seen = feed(spotter, faces)
    assert any(len({w.track for w in ws}) == 2 for ws, _ in seen)  # both faces in one batch
    windows = assert_same(spotter, seen)
    # Each chunk was encoded once: 2 tracks x 7 aligned chunks (0..96) + the final windows' own.
    per_track_aligned = (120 - spotter.window) // CHUNK_FRAMES + spotter.window // CHUNK_FRAMES
    assert windows >= 2 * 6
    assert spotter.encoded_chunks <= 2 * (per_track_aligned + spotter.window // CHUNK_FRAMES)
    assert spotter.encoded_chunks < windows * spotter.window // CHUNK_FRAMES  # fewer than uncached
    # Rings were dropped when the tracks ended (end_all -> final windows evict everything).
    assert spotter.cache_bytes() == 0


def test_ring_is_bounded_and_dropped_when_the_face_is_lost():
    engine = engine_for("tiny")
    spotter = FGSLSpotter(engine, cached=True)
    faces = track_faces("pyfeat_single_face.mp4", 72, max_faces=1, size=spotter.crop_size)
    buffers = Buffers(spotter.window, spotter.stride, spotter.fps)
    sizes = []
    for frame_faces in faces:
        windows = buffers.push(frame_faces)
        if windows:
            spotter.process(windows)
            sizes.append(len(spotter._rings[0]))
    chunk_bytes = spotter.cache_bytes(0) / max(1, sizes[-1])
    assert max(sizes) <= spotter.window // CHUNK_FRAMES  # never more than a window's chunks
    assert spotter.cache_bytes(0) <= chunk_bytes * spotter.window // CHUNK_FRAMES
    spotter.end_track(0)
    assert spotter.cache_bytes() == 0


@pytest.mark.slow
@pytest.mark.parametrize("name,backend", [("realtime", "torch"), ("balanced", "torch"), ("accurate", "torch"),
                                          ("realtime", "onnxruntime"), ("balanced", "onnxruntime"),
                                          ("accurate", "onnxruntime")])
def test_cached_equals_whole_model_for_every_preset(name, backend):
    """The product presets at their real sizes, two windows of a real face (80 frames)."""
    engine = engine_for(name, backend)
    spotter = FGSLSpotter(engine, cached=True)
    faces = track_faces("liveportrait_d6_expressions.mp4", 80, max_faces=1, size=spotter.crop_size)  # windows at 0, 16
    seen = feed(spotter, faces)
    # Windows at 0 and 16, and the track's last window over 16's frames (process() would skip it).
    assert assert_same(spotter, seen) == 3
    assert spotter.encoded_chunks == 6  # chunks 0, 16, 32, 48, 64 once; 16 again for the last window


def test_cached_stride_must_be_chunk_aligned():
    with pytest.raises(ValueError, match="multiple of 16"):
        FGSLSpotter(engine_for("tiny"), cached=True, stride=8)
