"""The flow spotter on real faces (real MediaPipe landmarks, crops and blendshapes): blinks
are not reported, small movements on a still face are, a frame edge moving against the face
is not a movement, and the per-track flow cache changes no number."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import realtime.spotters.flow as flow_module
from fgsl.data.synthetic import Recipe, make_set
from fgsl.evaluate import iou
from realtime.events import EventMerger
from realtime.face import BLENDSHAPE_NAMES
from realtime.spotters.flow import BLINK_SHAPES, FlowSettings, FlowSpotter
from realtime.types import Event, FaceObservation, Window
from tests.conftest import live_windows, shared_video, track_faces

#: Talks all the time; MediaPipe's eyeBlink reaches about 0.7 three times in the first 130 frames.
TALKING = "liveportrait_d13_talking_portrait.mp4"
#: Smiles, and blinks once (eyeBlink about 0.6 near frame 27 of its 72).
BLINKING = "pyfeat_single_face.mp4"
#: Pulls faces; held still (seed 1 of the test part), its head is tilted and its eyes rolled.
GRIMACING = "liveportrait_d6_expressions.mp4"


def faces_of(name: str | Path, frames: int) -> list[list[FaceObservation]]:
    faces = track_faces(name, frames, max_faces=1, size=FlowSpotter.crop_size)
    assert all(len(found) == 1 for found in faces)
    return faces


@pytest.fixture(scope="module")
def talking_face() -> list[list[FaceObservation]]:
    return faces_of(TALKING, 130)


def windows_of(faces: list[list[FaceObservation]], spotter: FlowSpotter) -> list[Window]:
    return live_windows(faces, spotter.window, spotter.stride, spotter.fps, finish=True)


def spot(faces: list[list[FaceObservation]], spotter: FlowSpotter) -> list[Event]:
    merger, events = EventMerger(spotter.name, gap_s=spotter.merge_gap_s), []
    for window in windows_of(faces, spotter):
        now = float(window.timestamps[-1])
        events += merger.add(0, spotter.process([window])[0], spotter.final_before(window), now,
                             track_ended=window.final)
    return events + merger.finish(faces[-1][0].timestamp)


@pytest.mark.slow
def test_blinks_are_not_micro_expressions(monkeypatch):
    face = faces_of(BLINKING, 72)
    kept = spot(face, FlowSpotter())
    monkeypatch.setattr(flow_module, "BLINK_RISE", 2.0)  # no blendshape rises by 2: the rule is off
    every = spot(face, FlowSpotter())
    span = {(e.onset, e.offset) for e in kept}
    removed = [e for e in every if (e.onset, e.offset) not in span]
    assert span <= {(e.onset, e.offset) for e in every}  # the rule only removes
    assert removed, "this face blinks; the rule removed nothing"
    eyes = np.stack([found[0].blendshapes for found in face])[:, [BLENDSHAPE_NAMES.index(n) for n in BLINK_SHAPES]]
    for event in removed:  # each removed movement holds a closed eye (an open eye reads about 0.1-0.3)
        assert eyes[max(0, event.onset - 2):event.offset + 3].max() >= 0.5, (event, eyes[event.onset:event.offset + 1])


@pytest.mark.slow
def test_cached_flow_gives_the_same_displacements_as_a_fresh_spotter(talking_face):
    streaming = FlowSpotter()
    windows = windows_of(talking_face, streaming)
    assert len(windows) > 5
    for window in windows:
        streamed = streaming.signal(window)[0]
        fresh = FlowSpotter().signal(window)[0]
        np.testing.assert_allclose(streamed, fresh, atol=1e-5)
        # Only the frame pairs a later window can still use stay cached.
        assert len(streaming._tracks[0].flows) <= streaming.window


@pytest.mark.slow
def test_small_movements_on_a_still_face_are_found(tmp_path: Path):
    """3 px movements (the synthetic generator's default, 2.3 % of the face crop) injected into
    a still real face are all found and nothing else is; with the threshold floor of 0.35 px
    used before, none of these four was. Without movements, the same still face raises nothing."""
    still = Recipe(count=1, frames=150, part="test", amplitude=3.0, still=True, seed=1)
    truth = make_set([shared_video(GRIMACING)], tmp_path / "moves", still, progress=False)
    assert len(truth) == 4
    faces = faces_of(next((tmp_path / "moves" / "videos").glob("*.avi")), 150)
    found = spot(faces, FlowSpotter())
    assert len(found) == len(truth)
    assert all(e.kind == "micro" and any(iou(e, t) >= 0.5 for t in truth) for e in found), (found, truth)
    assert not spot(faces, FlowSpotter(FlowSettings(floor_px=0.35)))

    quiet = Recipe(count=1, frames=150, part="test", events=False, still=True, seed=1)
    make_set([shared_video(GRIMACING)], tmp_path / "quiet", quiet, progress=False)
    assert spot(faces_of(next((tmp_path / "quiet" / "videos").glob("*.avi")), 150), FlowSpotter()) == []


@pytest.mark.slow
def test_a_frame_edge_moving_against_a_still_face_is_not_a_movement(tmp_path: Path):
    """A still face drifting 6 px (``--sway``) in a tight crop: the aligned crop reaches past
    the video's bottom edge under the chin, and that edge moves against the face. Nothing is
    injected, so nothing may be reported; read blind to the edge (every pixel taken as
    picture), the chin region reports the edge's motion (2 events here)."""
    quiet = Recipe(count=1, frames=150, part="test", events=False, still=True, sway=6.0, seed=3)
    make_set([shared_video(GRIMACING)], tmp_path, quiet, progress=False)
    faces = faces_of(next((tmp_path / "videos").glob("*.avi")), 150)
    assert all(not found[0].inside.all() for found in faces)  # the crop does reach past the frame
    assert spot(faces, FlowSpotter()) == []
    blind = [[dataclasses.replace(face, inside=None) for face in found] for found in faces]
    assert spot(blind, FlowSpotter())


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_sensitivity_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="sensitivity must be a positive number"):
        flow_module.FlowSpotter(sensitivity=bad)


@pytest.mark.slow
def test_a_movement_at_a_tracks_end_is_reported_once_and_in_place(tmp_path: Path):
    """A track cut at every length over a stride and more, just after its first window and
    just after its last movement: each movement the signal reaches is found, in place, once.
    Before, a track whose length completed a regular window got no last window and lost the
    movement near its end (length 48 here: 34-41-47); where an apex lay past the signal's
    reach, its lobe k frames earlier was reported as a movement (length 100: 87-91-94 beside
    the 91-97-104 movement); and the last window, which starts wherever the track's last
    frames do, could report a movement already emitted a second time."""
    still = Recipe(count=1, frames=150, part="test", amplitude=6.0, still=True, seed=1)
    truth = make_set([shared_video(GRIMACING)], tmp_path, still, progress=False)
    faces = faces_of(next((tmp_path / "videos").glob("*.avi")), 150)
    spotter = FlowSpotter()
    k, last = spotter.settings.lag, max(truth, key=lambda t: t.offset)
    assert last.offset + 2 * spotter.stride <= 150, truth
    lengths = [*range(spotter.window - 1, spotter.window + spotter.stride + 2),
               *range(last.offset - 4, last.offset + 2 * spotter.stride)]

    def matches(e: Event, t) -> bool:  # (a movement cut by the track's end is found shorter)
        return iou(e, t) > 0 and abs(e.apex - t.apex) <= k // 2

    for length in lengths:
        found = spot(faces[:length], FlowSpotter())
        spans = [(e.onset, e.apex, e.offset) for e in found]
        assert all(iou(a, b) < 0.3 for i, a in enumerate(found) for b in found[i + 1:]), (length, spans)
        assert all(any(matches(e, t) for t in truth) for e in found), (length, spans, truth)
        for t in truth:
            if t.apex + k + 2 <= length:  # the signal reaches its apex (a window's last k frames have none)
                assert any(matches(e, t) for e in found), (length, spans, t)
