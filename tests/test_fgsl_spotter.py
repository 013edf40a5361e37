"""realtime.spotters.fgsl on windows of real aligned face crops (MediaPipe on the shared videos).

The engine is the tiny preset with random (untrained) weights: its intervals mean nothing, so
these tests check the plumbing around the model, not what it finds: preprocessing (the engine
sees exactly the clip offline inference would build), one batched engine call, decoding,
the mapping back to source frames and times, labels, and how weights are opened or refused.
Untrained scores are about 0.01, so the spotters here run with threshold 0 to get candidates.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import pytest

import engines
from fgsl import weights
from fgsl.cli import UsageError, run
from fgsl.config import IMAGENET_MEAN, IMAGENET_STD, preset
from fgsl.decode import point_layout
from fgsl.model import build
from fgsl.weights import WeightsError
from realtime.buffer import Buffers
from realtime.cam import build_parser
from realtime.face import FaceTracker
from realtime.pipeline import Pipeline
from realtime.spotters import make_spotter
from realtime.spotters.fgsl import MICRO_MAX_S, FGSLSpotter, megc_label, scaled_threshold
from realtime.types import LABELS, FaceObservation, Frame, RealtimeError, Window, validate_event_line
from tests.conftest import live_windows, randomise_adapters, shared_video, track_faces

SIZE = 32  # the tiny preset's image_size: crops passed on as they are (live, the tracker makes ALIGNED_CROP px)


def track(name: str, count: int, max_faces: int) -> list[list[FaceObservation]]:
    return track_faces(name, count, max_faces, SIZE)


@pytest.fixture(scope="module")
def single() -> list[list[FaceObservation]]:
    faces = track("pyfeat_single_face.mp4", 64, max_faces=1)
    assert all(len(f) == 1 for f in faces)
    return faces


@pytest.fixture(scope="module")
def pair() -> list[list[FaceObservation]]:
    faces = track("liveportrait_d18_d19_two_faces_sidebyside.mp4", 20, max_faces=2)
    assert all(len(f) == 2 for f in faces) and {f.track for f in faces[-1]} == {0, 1}
    return faces


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Untrained tiny weights (16-frame windows) as a real weights folder."""
    model = build(preset("tiny", window_frames=16), seed=0)
    randomise_adapters(model)  # the IGA branches contribute, as in a trained model
    return weights.save(model, tmp_path_factory.mktemp("untrained"), trained=False)


@pytest.fixture(scope="module")
def engine(folder):
    return engines.open(folder, backend="torch", allow_untrained=True)


def by_hand(crops: np.ndarray) -> np.ndarray:
    """The clip written out here, not with fgsl's helper: RGB/255, ImageNet mean/std, [3, T, H, W]."""
    x = (crops.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return x.transpose(3, 0, 1, 2).astype(np.float32)


class Counting:
    """An engine wrapper that records the batch size of every call."""

    def __init__(self, engine) -> None:
        self.inner, self.cfg, self.calls = engine, engine.cfg, []

    def infer(self, clips):
        self.calls.append(clips.shape[0])
        return self.inner.infer(clips)

    def describe(self):
        return self.inner.describe()


def test_candidates_lie_in_their_window_with_valid_labels(engine, single) -> None:
    spotter = FGSLSpotter(engine, threshold=0.0, cached=False)
    assert (spotter.name, spotter.window, spotter.stride, spotter.fps, spotter.crop_size) == ("fgsl", 16, 4, 30.0, 128)
    assert FGSLSpotter(engine).stride == 16  # cached: chunk-aligned windows
    assert "UNTRAINED" in spotter.describe() and "torch" in spotter.describe() and str(engine.source) in spotter.describe()
    windows = live_windows(single, spotter.window, spotter.stride, spotter.fps)
    assert len(windows) >= 4 and windows[0].crops.shape == (16, SIZE, SIZE, 3)
    results = spotter.process(windows)
    assert len(results) == len(windows)
    for window, found in zip(windows, results):
        assert found, "threshold 0 keeps the decoder's soft-NMS survivors; there must be some"
        assert len(found) <= engine.cfg.max_intervals
        for c in found:
            assert c.track == window.track
            assert window.start <= c.onset <= c.apex <= c.offset <= window.end
            for frame, seconds in ((c.onset, c.onset_s), (c.apex, c.apex_s), (c.offset, c.offset_s)):
                pos = int(np.flatnonzero(window.indices == frame)[0])
                assert seconds == window.timestamps[pos]
            assert c.label in LABELS and c.kind in ("micro", "macro")
            assert 0 < c.score < 1
        scores = [c.score for c in found]
        assert scores == sorted(scores, reverse=True)


def test_one_engine_call_for_all_faces_equals_one_by_one(engine, single, pair) -> None:
    counting = Counting(engine)
    spotter = FGSLSpotter(counting, threshold=0.0)
    two = live_windows(pair, spotter.window, spotter.stride, spotter.fps)
    one = live_windows(single, spotter.window, spotter.stride, spotter.fps)
    batch = [w for w in two if w.track == 0][:1] + [w for w in two if w.track == 1][:1] + one[1:2]
    assert [w.track for w in batch] == [0, 1, 0]
    together = spotter.process(batch)
    assert counting.calls == [3]
    apart = [spotter.process([w])[0] for w in batch]
    assert counting.calls == [3, 1, 1, 1]
    assert together[0] != together[1]  # two different faces
    for a, b in zip(together, apart):
        assert [(c.track, c.onset, c.apex, c.offset, c.label, c.kind) for c in a] == \
               [(c.track, c.onset, c.apex, c.offset, c.label, c.kind) for c in b]
        np.testing.assert_allclose([c.score for c in a], [c.score for c in b], atol=2e-4)
    assert spotter.process([]) == [] and counting.calls == [3, 1, 1, 1]


def test_engine_sees_the_rgb_imagenet_clip_channels_first(engine, single) -> None:
    spotter = FGSLSpotter(engine)
    window = live_windows(single, spotter.window, spotter.stride, spotter.fps)[2]
    clip = by_hand(window.crops)
    np.testing.assert_allclose(spotter.clips([window])[0], clip, atol=1e-6)
    raw = spotter.infer([window])
    ref = engine.infer(clip[None])
    for key in ("scores", "offsets"):  # float32 rounding of the inputs differs: ~2e-6 here
        np.testing.assert_allclose(raw[key], ref[key], atol=2e-5)
    # The comparison can tell the mistakes apart: BGR order or normalising twice changes the outputs.
    bgr = engine.infer(by_hand(window.crops[..., ::-1])[None])
    twice = engine.infer(((clip - np.array(IMAGENET_MEAN, np.float32)[:, None, None, None])
                          / np.array(IMAGENET_STD, np.float32)[:, None, None, None])[None])
    for wrong in (bgr, twice):
        assert np.abs(wrong["scores"] - ref["scores"]).max() > 1e-3


def test_crops_of_another_size_are_resized(engine, single) -> None:
    spotter = FGSLSpotter(engine, threshold=0.0)
    window = live_windows(single, spotter.window, spotter.stride, spotter.fps)[0]
    big = Window(window.track, window.indices, window.timestamps, window.crops.repeat(2, 1).repeat(2, 2),
                 window.landmarks * 2, window.blendshapes)
    assert big.crops.shape == (16, 2 * SIZE, 2 * SIZE, 3)
    # Area averaging of 2x2 blocks of equal pixels gives the original crops back exactly.
    np.testing.assert_array_equal(spotter.clips([big]), spotter.clips([window]))
    assert spotter.process([big]) == spotter.process([window])
    with pytest.raises(RealtimeError, match="window of 8 frames"):
        spotter.process([Window(window.track, window.indices[:8], window.timestamps[:8], window.crops[:8],
                                window.landmarks[:8], window.blendshapes[:8])])


class Planted:
    """An engine that reports chosen intervals: scores/offsets built for given points."""

    def __init__(self, cfg, picks: list[tuple[int, int, float, float]]) -> None:
        self.cfg = cfg
        self.picks = picks  # (point, class, offset_start, offset_end) in units of the point's stride

    def infer(self, clips):
        scores = np.full((len(clips), self.cfg.num_points, self.cfg.num_classes), -20.0, np.float32)
        offsets = np.zeros((len(clips), self.cfg.num_points, 2), np.float32)
        for i, (point, label, start, end) in enumerate(self.picks):
            scores[:, point, label] = 3.0 - i  # distinct scores: a fixed order
            offsets[:, point] = (start, end)
        return {"scores": scores, "offsets": offsets}

    def describe(self):
        return {"backend": "planted", "preset": self.cfg.name}


def test_intervals_map_to_source_frames_through_the_window(single) -> None:
    """A model at 15 fps on the 30 fps video: model frame k is source frame 2k (real buffer)."""
    cfg = preset("tiny", fps=15.0)  # 32-frame windows, points of stride 2, 4, 8, 16 frames
    centres, strides = point_layout(cfg)
    long_point = int(np.flatnonzero((strides == 16) & (centres == 7.5))[0])  # frames 0-15
    short_point = int(np.flatnonzero((strides == 2) & (centres == 26.5))[0])  # frames 26-27
    ramp_point = int(np.flatnonzero((strides == 2) & (centres == 20.5))[0])  # frames 20-21
    surprise, negative = cfg.classes.index("surprise"), cfg.classes.index("negative")
    # long: 7.5 - 0.25*16 = 3.5 .. 7.5 + 0.75*16 = 19.5 (16 model frames = 1.07 s: macro)
    # short: 26.5 - 1*2 = 24.5 .. 26.5 + 1.5*2 = 29.5 (5 model frames = 0.33 s: micro), 0.33 s after long
    # ramp: 18.5 .. 23.5, overlapping long with a lower score: the same movement, merged away
    engine = Planted(cfg, [(long_point, surprise, 0.25, 0.75), (short_point, negative, 1.0, 1.5),
                           (ramp_point, negative, 1.0, 1.5)])
    spotter = FGSLSpotter(engine, threshold=0.5, trained=True)
    assert (spotter.window, spotter.stride, spotter.fps, spotter.crop_size) == (32, 8, 15.0, 128)
    assert "UNTRAINED" not in spotter.describe()
    windows = live_windows(single, spotter.window, spotter.stride, spotter.fps)
    assert len(windows) == 1 and windows[0].indices.tolist() == list(range(0, 64, 2))
    window = windows[0]
    long, short = spotter.process(windows)[0]
    # round half up: 3.5 -> 4, centre 11.5 -> 12, 19.5 -> 20; source frame = 2 x model frame
    assert (long.onset, long.apex, long.offset) == (8, 24, 40)
    assert (long.label, long.kind) == ("surprise", "macro") and (19.5 - 3.5) / 15 > MICRO_MAX_S
    assert long.onset_s == window.timestamps[4] and long.offset_s == window.timestamps[20]
    assert (short.onset, short.apex, short.offset) == (50, 54, 60)  # 24.5 -> 25, 26.5 -> 27, 29.5 -> 30
    assert (short.label, short.kind) == ("negative", "micro")
    assert long.score == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-4) and short.score < long.score
    assert spotter.final_before(window) == window.indices[8]


def test_final_before_and_end_track(engine, single) -> None:
    spotter = FGSLSpotter(engine, cached=False)
    buffers = Buffers(spotter.window, spotter.stride, spotter.fps)
    windows = []
    for faces in single[:18]:
        windows += buffers.push(faces)
    windows += buffers.end([0])
    assert [w.final for w in windows] == [False, True]
    assert spotter.final_before(windows[0]) == windows[0].indices[4] == 4
    assert spotter.final_before(windows[1]) == windows[1].end + 1 == 18
    spotter.end_track(0)  # must not fail, also for unknown tracks
    spotter.end_track(7)


def test_a_last_window_over_the_last_regular_frames_is_not_run_again(engine, single) -> None:
    """A track whose length completes a regular window still gets a last window (the flow
    spotter needs it), over the same frames: the model saw them, so it is not run again."""
    spotter = FGSLSpotter(engine, cached=False, threshold=0.0)
    buffers = Buffers(spotter.window, spotter.stride, spotter.fps)
    windows = [w for faces in single[:20] for w in buffers.push(faces)]  # 16 + 4 frames: two windows
    last = buffers.end([0])
    assert len(windows) == 2 and len(last) == 1 and last[0].repeats_last and last[0].position == windows[-1].position
    assert all(spotter.process(windows))  # (threshold 0: every window has candidates)
    calls = len(spotter.work["infer_ms"])
    assert spotter.process(last) == [[]] and len(spotter.work["infer_ms"]) == calls
    assert spotter.process(windows[-1:] + last)[0]  # in a batch, the other windows still run
    assert len(spotter.work["infer_ms"]) == calls + 1


def test_pipeline_with_fgsl_emits_valid_events(engine) -> None:
    spotter = FGSLSpotter(engine, threshold=0.0)
    cap = cv2.VideoCapture(str(shared_video("pyfeat_single_face.mp4")))
    with FaceTracker(max_faces=1, crop_size=spotter.crop_size) as tracker:
        pipeline = Pipeline(tracker, spotter)
        events = []
        for i in range(24):
            ok, image = cap.read()
            assert ok
            events += pipeline.step(Frame(i, i / 30, time.monotonic(), image)).events
        events += pipeline.finish()
    cap.release()
    assert events and all(e.spotter == "fgsl" for e in events)
    for e in events:
        validate_event_line(e.to_json())
        assert 0 <= e.onset <= e.offset <= 23


def args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_untrained_weights_refused_without_allow_untrained(folder, capsys) -> None:
    with pytest.raises(WeightsError, match="untrained.*--allow-untrained"):
        make_spotter(args("--weights", str(folder)))
    assert run(lambda _: make_spotter(args("--weights", str(folder)))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "untrained" in err
    with pytest.raises(UsageError, match="--allow-untrained"):
        make_spotter(args("--spotter", "fgsl"))


def test_make_spotter_weights_pick_fgsl(folder, tmp_path) -> None:
    spotter = make_spotter(args("--weights", str(folder), "--allow-untrained"))
    assert isinstance(spotter, FGSLSpotter) and spotter.name == "fgsl"
    assert (spotter.window, spotter.stride, spotter.crop_size, spotter.cached) == (16, 16, 128, True)
    assert spotter.trained is False and "UNTRAINED WEIGHTS" in spotter.describe()
    assert spotter.threshold == pytest.approx(spotter.cfg.score_threshold)
    # Weights marked trained (random here: only the flag matters) need no flag and are not flagged.
    trained = weights.save(build(preset("tiny", window_frames=16), seed=0), tmp_path / "t", trained=True)
    spotter = make_spotter(args("--weights", str(trained), "--sensitivity", "3"))
    assert spotter.trained is True and "UNTRAINED" not in spotter.describe() and "centre crops" not in spotter.describe()
    assert spotter.threshold == pytest.approx(scaled_threshold(0.3, 3.0)) and spotter.threshold < 0.3
    # No weights: --allow-untrained runs the seeded --preset network.
    spotter = make_spotter(args("--spotter", "fgsl", "--allow-untrained", "--preset", "tiny"))
    assert isinstance(spotter, FGSLSpotter) and spotter.window == 32 and "UNTRAINED" in spotter.describe()
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        make_spotter(args("--spotter", "fgsl", "--allow-untrained", "--preset", "nope"))
    with pytest.raises(UsageError, match="--preset is for --allow-untrained without --weights"):
        make_spotter(args("--weights", str(trained), "--preset", "tiny"))  # it would be silently ignored
    with pytest.raises(SystemExit):  # the command line refuses it (argparse)
        args("--weights", str(trained), "--sensitivity", "0")
    with pytest.raises(RealtimeError, match="sensitivity"):  # and so does the spotter, for callers in Python
        make_spotter(argparse.Namespace(**{**vars(args("--weights", str(trained))), "sensitivity": 0.0}))


def test_weights_trained_on_centre_crops_are_flagged(tmp_path) -> None:
    """fgsl.train records the crops it trained on; the live spotter (aligned crops) says so."""
    model = build(preset("tiny", window_frames=16), seed=0)
    centre = weights.save(model, tmp_path / "c", trained=True, info={"crops": "centre"})
    assert "trained on centre crops" in make_spotter(args("--weights", str(centre))).describe()
    aligned = weights.save(model, tmp_path / "a", trained=True, info={"crops": "aligned"})
    assert "centre crops" not in make_spotter(args("--weights", str(aligned))).describe()
    # An engine folder built from those weights says the same (engines.build copies it).
    from engines.export import export_engine_dir

    for name, folder in (("ce", centre), ("ae", aligned)):
        export_engine_dir(folder, tmp_path / name, graphs=("encode_chunk", "decode_window"))
    assert "trained on centre crops" in make_spotter(args("--weights", str(tmp_path / "ce"))).describe()
    assert "centre crops" not in make_spotter(args("--weights", str(tmp_path / "ae"))).describe()
    # A folder built before manifests recorded crops: the weights folder it names still says.
    from engines.export import read_manifest, write_manifest

    manifest = read_manifest(tmp_path / "ce")
    del manifest["crops"]
    write_manifest(tmp_path / "ce", manifest)
    assert "trained on centre crops" in make_spotter(args("--weights", str(tmp_path / "ce"))).describe()


def test_threshold_sensitivity_and_labels() -> None:
    assert scaled_threshold(0.3, 1.0) == 0.3
    lower, higher = scaled_threshold(0.3, 3.0), scaled_threshold(0.3, 1 / 3)
    assert 0 < lower < 0.3 < higher < 1
    assert lower / (1 - lower) == pytest.approx(0.3 / 0.7 / 3)
    assert scaled_threshold(0.9, 0.01) < 1
    with pytest.raises(ValueError):
        scaled_threshold(0.3, -1)
    assert [megc_label(c) for c in preset("tiny").classes] == list(LABELS)
    assert (megc_label("happiness"), megc_label("Disgust"), megc_label("other")) == ("positive", "negative", "others")
    with pytest.raises(ValueError, match="no MEGC label"):
        megc_label("boredom")


def test_engine_device_flag_reaches_the_engine(tmp_path) -> None:
    """``--engine-device`` picks where the live FGSL engine runs (auto: the GPU where there is one)."""
    import torch

    trained = weights.save(build(preset("tiny", window_frames=16), seed=0), tmp_path / "t", trained=True)
    assert " on cpu" in make_spotter(args("--weights", str(trained), "--engine-device", "cpu")).describe()
    auto = make_spotter(args("--weights", str(trained), "--backend", "torch")).describe()
    assert (" on cuda" in auto) == torch.cuda.is_available() and (" on cpu" in auto) != torch.cuda.is_available()
    with pytest.raises(ValueError, match="unknown engine device 'tpu'"):
        make_spotter(args("--weights", str(trained), "--engine-device", "tpu"))
