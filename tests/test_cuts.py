"""realtime.cuts and the tracks a hard cut ends, on real face videos with real MediaPipe.

The case a review found: an edited video cut from one person to another at the same place of
the frame kept one track across the cut, and the flow spotter reported the change of face as a
score-1.0 micro-expression (and a false one after it). Now the cut ends the tracks, and each
shot's events are exactly those of the shot alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.cam import main
from realtime.cuts import CUT_THRESHOLD, CutDetector, _luma_thumbnail, content_change
from realtime.face import FaceTracker
from realtime.types import Frame
from tests.conftest import SHARED_DATA
from tests.test_cam import events_of

TALKING = "liveportrait_d13_talking_portrait.mp4"  # 720x1280, one face talking
EXPRESSIONS = "liveportrait_d6_expressions.mp4"    # 480x480, one face pulling strong expressions
SHOT_FRAMES = 90


def square_frames(name: str, count: int | None = None, size: int = 480) -> list[np.ndarray]:
    """The video's frames, centre-cropped to a square of ``size`` px: two people's faces land
    at about the same place of the frame, as an interview's cut to the other speaker puts them."""
    cap = cv2.VideoCapture(str(SHARED_DATA / name))
    frames = []
    while count is None or len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        h, w = image.shape[:2]
        side = min(h, w)
        y, x = (h - side) // 2, (w - side) // 2
        frames.append(cv2.resize(image[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA))
    cap.release()
    return frames


def cuts_in(frames: list[np.ndarray]) -> list[int]:
    detector = CutDetector()
    return [i for i, image in enumerate(frames) if detector.is_cut(image)]


@pytest.mark.parametrize("name", sorted(p.name for p in SHARED_DATA.glob("*.mp4")))
def test_no_cut_within_a_continuous_face_video(name: str) -> None:
    """Every frame of every shared video (talking, pulling faces, two faces): no cut. The
    largest change between consecutive frames stays far under the threshold."""
    cap = cv2.VideoCapture(str(SHARED_DATA / name))
    detector, found, count = CutDetector(), [], 0
    while (read := cap.read())[0]:
        if detector.is_cut(read[1]):
            found.append(count)
        count += 1
    assert count > 50 and found == []


def grey(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for f in frames]


def dim_and_noisy(frames: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """A webcam in a dim room: a third of the light and sensor noise (sigma 10) on every pixel."""
    rng = np.random.default_rng(seed)
    return [np.clip(f * 0.3 + rng.normal(0, 10, f.shape), 0, 255).astype(np.uint8) for f in frames]


def test_a_cut_between_two_people_is_found_at_its_frame() -> None:
    talking, expressions = square_frames(TALKING, 30), square_frames(EXPRESSIONS, 30)
    assert cuts_in(talking + expressions) == [30]
    assert cuts_in(expressions + talking) == [30]
    assert cuts_in(grey(talking + expressions)) == [30]  # (a grayscale video has no hue to see it in)
    assert content_change(_luma_thumbnail(talking[29]), _luma_thumbnail(expressions[0])) > 2 * CUT_THRESHOLD


def test_noise_and_dim_light_are_no_cuts() -> None:
    """Hue is noise where pixels are dark or grey: judged on all three HSV channels, 91 of 100
    noisy frames of the expressions video were cuts (nothing was spotted); judged on value, none."""
    expressions = square_frames(EXPRESSIONS, 120)
    assert cuts_in(dim_and_noisy(expressions)) == []
    rng = np.random.default_rng(1)
    assert cuts_in([np.clip(f + rng.normal(0, 10, f.shape), 0, 255).astype(np.uint8) for f in expressions]) == []


def test_a_black_frame_is_no_shot_of_its_own() -> None:
    """One black frame (a glitch, a hand over the lens) is no cut, before or after it; a cut
    through black frames to another person is still found where the person appears."""
    talking, expressions = square_frames(TALKING, 10), square_frames(EXPRESSIONS, 10)
    black = np.zeros_like(talking[0])
    assert cuts_in([black] * 3 + talking) == []  # (a camera that starts black)
    assert cuts_in(talking[:5] + [black] + talking[5:]) == []
    assert cuts_in(talking + [black] * 4 + expressions) == [14]


def test_a_change_of_frame_size_is_a_cut_and_the_first_frame_is_not() -> None:
    frames = square_frames(EXPRESSIONS, 3)
    assert cuts_in(frames[:2] + [cv2.resize(frames[2], (320, 240))]) == [2]
    assert cuts_in(frames[:1]) == []


def test_one_black_frame_does_not_end_a_track() -> None:
    talking = square_frames(TALKING, 20)
    with FaceTracker(max_faces=1, crop_size=112) as tracker:
        frames = talking[:10] + [np.zeros_like(talking[0])] + talking[11:]
        updates = [tracker.process(Frame(i, i / 30, 0.0, image)) for i, image in enumerate(frames)]
    assert [len(u.faces) for u in updates] == [1] * 10 + [0] + [1] * 9
    assert {f.track for u in updates for f in u.faces} == {0} and not any(u.lost for u in updates)


def test_the_tracker_ends_its_tracks_at_a_cut() -> None:
    frames = square_frames(TALKING, 15) + square_frames(EXPRESSIONS, 15)
    with FaceTracker(max_faces=2, crop_size=112) as tracker:
        updates = [tracker.process(Frame(i, i / 30, 0.0, image)) for i, image in enumerate(frames)]
    assert {f.track for u in updates[:15] for f in u.faces} == {0}
    assert {f.track for u in updates[15:] for f in u.faces} == {1}  # the other person: a new track
    assert [i for i, u in enumerate(updates) if u.lost] == [15] and updates[15].lost == [0]


@pytest.mark.slow
def test_each_shot_of_an_edited_video_gets_its_own_events(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Two shots (a talking person, then another pulling faces) as one frame folder: the events
    are each shot's own, in place, and none spans the cut (before, one track ran through it and
    a false micro-expression came out after it). The shots' frames are the same files in both
    runs, so the comparison is exact."""
    shots = {"a": square_frames(TALKING, SHOT_FRAMES), "b": square_frames(EXPRESSIONS, SHOT_FRAMES)}
    joined = tmp_path / "ab"
    joined.mkdir()
    for offset, (shot, frames) in zip((0, SHOT_FRAMES), shots.items()):
        (tmp_path / shot).mkdir()
        for i, image in enumerate(frames):
            cv2.imwrite(str(tmp_path / shot / f"{i:04d}.jpg"), image)
            shutil.copyfile(tmp_path / shot / f"{i:04d}.jpg", joined / f"{offset + i:04d}.jpg")

    def spotted(folder: Path) -> list[dict]:
        code = main(["--source", str(folder), "--fps", "30", "--headless", "--quiet",
                     "--events", str(folder) + ".jsonl"])
        assert code == 0, capfd.readouterr()
        return events_of(Path(str(folder) + ".jsonl"))

    def key(event: dict, shift: int = 0) -> tuple:
        return (event["onset"] + shift, event["apex"] + shift, event["offset"] + shift, event["label"],
                event["score"])

    alone = {shot: spotted(tmp_path / shot) for shot in shots}
    together = spotted(joined)
    assert alone["a"] and alone["b"]  # (each shot has movements of its own to keep)
    assert [key(e) for e in together] == [key(e) for e in alone["a"]] + [key(e, SHOT_FRAMES) for e in alone["b"]]
    assert {e["track"] for e in together[:len(alone["a"])]} == {0}
    assert {e["track"] for e in together[len(alone["a"]):]} == {1}
