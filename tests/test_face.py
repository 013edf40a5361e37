"""realtime.face on real videos with the real (bundled) MediaPipe face model.

Numbers measured here (mediapipe 1.2.3, 2 shared CPU cores; 112 px crops): MediaPipe about
5-7 ms per frame (640x360 one face, 720x1280 portrait), 11 ms for 960x480 with two faces;
alignment (matching, One Euro filter, warpAffine) 0.3-0.5 ms per face. Alignment jitter, see
:func:`test_alignment_jitter_frozen_frame` and :func:`test_alignment_jitter_real_video`.
The short-range detector finds the face of ``liveportrait_d13_talking_portrait.mp4`` (720x1280)
on every one of its 352 frames: its eye distance is about 175 px, so it is not a "small" face.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest


from realtime.face import (  # noqa: E402
    BLENDSHAPE_NAMES,
    MODEL_PATH,
    MODEL_SHA256,
    TEMPLATE,
    FaceTracker,
    FaceUpdate,
    align_transform,
    inside_mask,
    key_points,
)
from realtime.types import Frame, RealtimeError  # noqa: E402
from tests.conftest import shared_video  # noqa: E402

S = 112


def read_frames(name: str, count: int | None = None) -> tuple[list[np.ndarray], float]:
    """The first ``count`` frames (all by default) of a shared video, and its fps."""
    cap = cv2.VideoCapture(str(shared_video(name)))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    images = []
    while count is None or len(images) < count:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    cap.release()
    assert images, f"could not read {name}"
    return images, fps


def frames(images: list[np.ndarray], fps: float, first: int = 0) -> Iterator[Frame]:
    for i, image in enumerate(images, start=first):
        yield Frame(i, i / fps, time.monotonic(), image)


def run(
    tracker: FaceTracker, images: list[np.ndarray], fps: float, first: int = 0
) -> list[FaceUpdate]:
    return [tracker.process(f) for f in frames(images, fps, first)]


def crop_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance (crop px) that a point fixed in the source image moves between the crop of
    transform ``a`` and the crop of transform ``b``, over the three template points."""
    c = TEMPLATE * S
    ai = cv2.invertAffineTransform(a.astype(np.float64))
    src = c @ ai[:, :2].T + ai[:, 2]
    return float(np.linalg.norm(src @ b[:, :2].T + b[:, 2] - c, axis=1).mean())


def jitter(transforms: list[np.ndarray]) -> tuple[float, float]:
    """(mean frame-to-frame crop motion, mean second difference of the crop window), crop px.

    The first includes real head motion; the second is near zero for smooth motion and about
    sqrt(6) x the noise for white jitter, so it isolates the jitter on a real video."""
    c = TEMPLATE * S
    window, scale = [], []
    for m in transforms:
        mi = cv2.invertAffineTransform(m.astype(np.float64))
        window.append(c @ mi[:, :2].T + mi[:, 2])  # the template points in source pixels
        scale.append(float(np.hypot(m[0, 0], m[1, 0])))
    q, s = np.array(window), np.array(scale)
    first = np.mean([crop_motion(a, b) for a, b in zip(transforms[:-1], transforms[1:])])
    second = (np.linalg.norm(q[2:] - 2 * q[1:-1] + q[:-2], axis=2).mean(1) * s[1:-1]).mean()
    return float(first), float(second)


@pytest.fixture(scope="module")
def single_face() -> tuple[list[np.ndarray], float, list[FaceUpdate]]:
    images, fps = read_frames("pyfeat_single_face.mp4")
    with FaceTracker(max_faces=4, crop_size=S) as tracker:
        updates = run(tracker, images, fps)
        assert all(u.face_ms > 0 and u.align_ms > 0 for u in updates)  # each stage timed per frame
    return images, fps, updates


def test_single_face_one_stable_track(single_face) -> None:
    images, _, updates = single_face
    h, w = images[0].shape[:2]
    assert len(updates) == len(images) == 72
    assert all(len(u.faces) == 1 for u in updates)
    assert {u.faces[0].track for u in updates} == {0}
    assert not any(u.lost for u in updates)
    for i, u in enumerate(updates):
        face = u.faces[0]
        assert face.index == i
        assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
        assert (face.landmarks[:, 0] >= 0).all() and (face.landmarks[:, 0] < w).all()
        assert (face.landmarks[:, 1] >= 0).all() and (face.landmarks[:, 1] < h).all()
        assert face.blendshapes.shape == (52,) and face.blendshapes.dtype == np.float32
        assert ((face.blendshapes >= 0) & (face.blendshapes <= 1)).all()
        assert face.crop.shape == (S, S, 3) and face.crop.dtype == np.uint8
        assert face.transform.shape == (2, 3)
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        # The eyes land near their template positions (the transform is smoothed, so allow a
        # few pixels of lag behind the raw landmarks).
        eyes = key_points(face.landmarks)[:2] @ face.transform[:, :2].T + face.transform[:, 2]
        assert np.abs(eyes - TEMPLATE[:2] * S).max() < 4.0
    # The person smiles through the clip: the smile blendshapes are the strongest.
    mean = np.mean([u.faces[0].blendshapes for u in updates], axis=0)
    smile = [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]
    assert mean[smile].min() > 0.3
    assert updates[0].faces[0].crop.mean() > 40  # a face, not the black border


def test_blendshape_names_match_the_model(single_face) -> None:
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python import BaseOptions, vision

    images, _, _ = single_face
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(MODEL_PATH)), output_face_blendshapes=True
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        rgb = cv2.cvtColor(images[0], cv2.COLOR_BGR2RGB)
        result = landmarker.detect(Image(image_format=ImageFormat.SRGB, data=rgb))
    names = tuple(c.category_name for c in result.face_blendshapes[0])
    assert names == BLENDSHAPE_NAMES and len(BLENDSHAPE_NAMES) == 52


def test_bundled_model_matches_documented_hash() -> None:
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == MODEL_SHA256
    readme = (MODEL_PATH.parent / "README.md").read_text()
    assert MODEL_SHA256 in readme and "Apache" in readme
    assert (MODEL_PATH.parent / "NOTICE").is_file()


def test_alignment_jitter_frozen_frame(single_face) -> None:
    """A frozen face (one real frame fed 40 times): every crop motion is jitter.

    Measured: MediaPipe's own output barely changes on an identical frame, so the alignment
    moves 0.006 px per frame on average (max 0.018 px) smoothed, 0.008 px raw."""
    images, fps, _ = single_face
    with FaceTracker(max_faces=1, crop_size=S) as tracker:
        updates = run(tracker, [images[10]] * 40, fps)
        # Repeated stream times (a paused source) must not break MediaPipe's VIDEO mode.
        again = tracker.process(Frame(40, 39 / fps, time.monotonic(), images[10]))
    assert all(len(u.faces) == 1 and u.faces[0].track == 0 for u in updates)
    assert again.faces and again.faces[0].track == 0
    smooth = [u.faces[0].transform for u in updates]
    raw = [align_transform(key_points(u.faces[0].landmarks), S) for u in updates]
    motions = [crop_motion(a, b) for a, b in zip(smooth[:-1], smooth[1:])]
    raw_first, _ = jitter(raw)
    print(f"frozen frame: smoothed {np.mean(motions):.4f} px/frame (max {max(motions):.4f}), "
          f"raw {raw_first:.4f}")
    assert np.mean(motions) < 0.05 and max(motions) < 0.2


def test_alignment_jitter_real_video() -> None:
    """Real motion plus jitter: the smoothed crop must move less than the raw-aligned one.

    Measured on frames 0-119 of ``liveportrait_d6_expressions.mp4`` (strong expressions, some
    head motion), 112 px crops: frame-to-frame motion raw 0.308 px, smoothed 0.153; second
    difference (jitter) raw 0.273, smoothed 0.058. On the 72 frames of
    ``pyfeat_single_face.mp4``: 0.22 -> 0.16 and 0.105 -> 0.044."""
    images, fps = read_frames("liveportrait_d6_expressions.mp4", count=120)
    with FaceTracker(max_faces=1, crop_size=S) as tracker:
        updates = run(tracker, images, fps)
    assert all(len(u.faces) == 1 and u.faces[0].track == 0 for u in updates)
    smooth = [u.faces[0].transform for u in updates]
    raw = [align_transform(key_points(u.faces[0].landmarks), S) for u in updates]
    (s1, s2), (r1, r2) = jitter(smooth), jitter(raw)
    print(f"real video: frame-to-frame smoothed {s1:.3f} raw {r1:.3f}; "
          f"second difference smoothed {s2:.3f} raw {r2:.3f} (crop px)")
    assert s1 < r1
    assert s2 < 0.5 * r2
    # ... and does not lag far behind the face: the smoothed crop window stays near the raw one.
    lag = [crop_motion(a, b) for a, b in zip(raw, smooth)]
    assert np.mean(lag) < 1.5 and max(lag) < 5.0


def test_two_faces_side_by_side_keep_their_ids() -> None:
    images, fps = read_frames("liveportrait_d18_d19_two_faces_sidebyside.mp4")
    with FaceTracker(max_faces=4, crop_size=S) as tracker:
        updates = run(tracker, images, fps)
        assert sorted(tracker.close()) == [0, 1]
    assert all(len(u.faces) == 2 for u in updates)
    assert not any(u.lost for u in updates)
    by_x = [sorted(u.faces, key=lambda f: f.box[0]) for u in updates]
    left, right = {fs[0].track for fs in by_x}, {fs[1].track for fs in by_x}
    assert len(left) == 1 and len(right) == 1 and left != right
    width = images[0].shape[1]
    assert all(fs[0].box[2] < width / 2 < fs[1].box[0] for fs in by_x)  # one face per half


def test_one_face_allowed_and_two_in_view_keeps_one_stable_track() -> None:
    """``--max-faces 1`` with two faces in view: MediaPipe may return either face each frame;
    the track must stay on one of them, not hop between them (a hop would end the track and
    lose its buffer every time)."""
    images, fps = read_frames("liveportrait_d18_d19_two_faces_sidebyside.mp4")
    images = images[:60]
    with FaceTracker(max_faces=1, crop_size=S) as tracker:
        updates = run(tracker, images, fps)
        assert tracker.close() == [0]
    assert all(len(u.faces) == 1 for u in updates) and not any(u.lost for u in updates)
    assert {u.faces[0].track for u in updates} == {0}
    width = images[0].shape[1]
    halves = {u.faces[0].box[0] + u.faces[0].box[2] < width for u in updates}  # box centre left of the middle?
    assert len(halves) == 1  # always the same face


def face_hidden(single_face) -> np.ndarray:
    """A frame of the video with its face painted over (the frame's median colour over the
    face's box and a margin): the face is missed, but the frame is not a cut (realtime.cuts),
    as when a hand covers the face. A black frame would be a cut, which ends every track at once."""
    images, _, updates = single_face
    x0, y0, x1, y1 = updates[0].faces[0].box
    mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    image = images[0].copy()
    h, w = image.shape[:2]
    image[max(0, int(y0 - my)):min(h, int(y1 + my)), max(0, int(x0 - mx)):min(w, int(x1 + mx))] = \
        np.median(image.reshape(-1, 3), axis=0)
    return image


def test_a_hidden_face_is_missed_but_is_no_cut(single_face) -> None:
    images, fps, _ = single_face
    hidden = face_hidden(single_face)
    with FaceTracker(max_faces=1, crop_size=S) as tracker:
        updates = run(tracker, [images[0], hidden, hidden], fps)
    assert [len(u.faces) for u in updates] == [1, 0, 0] and not any(u.lost for u in updates)


def test_face_lost_then_new_id(single_face) -> None:
    images, fps, _ = single_face
    hidden = face_hidden(single_face)
    lost_after = 5
    with FaceTracker(max_faces=2, crop_size=S, lost_after_s=lost_after / fps) as tracker:
        seq = images[:10] + [hidden] + images[11:20]  # one missed frame: the track survives
        first = run(tracker, seq, fps)
        assert {f.track for u in first for f in u.faces} == {0}
        assert first[10].faces == [] and not any(u.lost for u in first)
        gone = run(tracker, [hidden] * (lost_after + 3), fps, first=20)
        lost_at = [i for i, u in enumerate(gone) if u.lost]
        assert lost_at == [lost_after - 1] and gone[lost_after - 1].lost == [0]
        assert tracker.live_tracks == []
        back = run(tracker, images[40:50], fps, first=20 + lost_after + 3)
        assert {f.track for u in back for f in u.faces} == {1}  # a new id, never 0 again
        assert tracker.close() == [1]


@pytest.mark.parametrize("fps,missed,lost_at", [(30.0, 10, 14), (60.0, 10, None), (200.0, 10, None),
                                                 (1.0, 2, None), (1.0, 3, 7)])
def test_a_track_outlives_a_dropout_shorter_than_a_third_of_a_second(single_face, fps, missed, lost_at) -> None:
    """Ten frames without the face: a third of a second at 30 fps ends the track, a sixth at
    60 fps or a twentieth at 200 fps (SAMM) does not (counted in frames, it ended at any rate).
    At 1 frame a second (a frame folder, a throttled tab) one or two missed frames do not end
    it either (counted in time alone, one did); three do."""
    images, _, _ = single_face
    hidden = face_hidden(single_face)
    with FaceTracker(max_faces=1, crop_size=S) as tracker:
        updates = run(tracker, images[:5] + [hidden] * missed + images[15:20], fps)
        ended = [i for i, u in enumerate(updates) if u.lost]
        assert ended == ([] if lost_at is None else [lost_at]), ended
        assert {f.track for u in updates[5 + missed:] for f in u.faces} == ({0} if lost_at is None else {1})


def test_a_gap_in_stream_time_ends_every_track(single_face) -> None:
    """A camera outage (8 s without frames, then the same face again): the face after it is a
    new track, and the old one is reported lost on the first frame after the gap."""
    images, fps, _ = single_face
    with FaceTracker(max_faces=2, crop_size=S) as tracker:
        before = run(tracker, images[:10], fps)
        after = run(tracker, images[10:15], fps, first=250)  # timestamps jump from 0.3 s to 8.3 s
    assert {f.track for u in before for f in u.faces} == {0}
    assert after[0].lost == [0] and not any(u.lost for u in after[1:])
    assert {f.track for u in after for f in u.faces} == {1}


def test_no_face_no_error() -> None:
    rng = np.random.default_rng(0)
    images = [np.zeros((360, 640, 3), np.uint8), rng.integers(0, 256, (360, 640, 3), np.uint8)]
    with FaceTracker() as tracker:
        updates = run(tracker, images * 3, 30.0)
        assert tracker.close() == []
    assert all(u.faces == [] and u.lost == [] for u in updates)
    with pytest.raises(RealtimeError, match="after close"):
        tracker.process(Frame(0, 0.0, 0.0, images[0]))


def test_bad_frame_image_is_refused() -> None:
    with FaceTracker() as tracker, pytest.raises(RealtimeError, match="BGR uint8"):
        tracker.process(Frame(0, 0.0, 0.0, np.zeros((360, 640), np.uint8)))


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(RealtimeError, match=r"nope.task is missing$"):  # the user's own path: no hint about ours
        FaceTracker(model_path=tmp_path / "nope.task")


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_model(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "face_landmarker.task"
    data = MODEL_PATH.read_bytes()
    junk = np.random.default_rng(0).bytes(4096)
    bad.write_bytes(junk if kind == "random" else data[: len(data) // 2])
    with pytest.raises(RealtimeError, match="corrupt") as info:
        FaceTracker(model_path=bad)
    assert "\n" not in str(info.value)
    # Without the hash check, MediaPipe's own load error is converted too.
    with pytest.raises(RealtimeError, match="MediaPipe could not load") as info:
        FaceTracker(model_path=bad, sha256=None)
    assert "\n" not in str(info.value)
    print(f"{kind} model: {info.value}")


def test_a_missing_system_library_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """A headless server without libEGL (as the project's GPU machine was): one line saying what
    to install, not "could not load face model". The library cannot be removed here, so
    MediaPipe's loader is made to fail the way it did there."""
    from mediapipe.tasks.python import vision

    def no_egl(options):  # noqa: ANN001, ANN202
        raise OSError("libEGL.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(vision.FaceLandmarker, "create_from_options", no_egl)
    with pytest.raises(RealtimeError) as info:
        FaceTracker()
    assert str(info.value) == ("MediaPipe cannot start: libEGL.so.1: cannot open shared object file: No such file "
                               "or directory (Debian/Ubuntu: apt-get install libegl1; `make setup` installs them)")


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_ctrl_c_while_mediapipe_starts_comes_once_the_landmarker_is_whole(name: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted half-way, MediaPipe's half-built objects print tracebacks of their own at
    exit. The real loader runs; the signal is sent to this process as it begins (SIGTERM and
    SIGHUP as ``realtime.cam`` handles them: as Ctrl-C)."""
    import os
    import signal

    from mediapipe.tasks.python import vision

    from realtime.interrupts import TERMINATING, interrupt_once

    sig = getattr(signal, name, None)
    if sig is None:
        pytest.skip(f"no {name} on this system")
    real = vision.FaceLandmarker.create_from_options
    made = []

    def interrupted_while_loading(options):  # noqa: ANN001, ANN202
        os.kill(os.getpid(), sig)
        made.append(real(options))
        return made[-1]

    real_close = vision.FaceLandmarker.close
    closed = []

    def recorded_close(self):  # noqa: ANN001, ANN202
        closed.append(self)
        return real_close(self)

    monkeypatch.setattr(vision.FaceLandmarker, "create_from_options", interrupted_while_loading)
    monkeypatch.setattr(vision.FaceLandmarker, "close", recorded_close)
    with interrupt_once(("SIGINT", *TERMINATING)), pytest.raises(KeyboardInterrupt):
        FaceTracker()
    assert len(made) == 1  # the landmarker was finished before the interrupt came...
    assert closed == made  # ...and closed then, not left to the garbage collector at exit


def test_inside_mask_marks_the_crop_pixels_that_show_the_frame():
    """The mask is what ``warpAffine`` fills from the frame (not the black past its edge), for
    a shift and for a turned, shrunk face."""
    frame = np.full((48, 64), 255, np.uint8)
    shift = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, -10.0]])
    mask = inside_mask(shift, (64, 48), 32)
    assert mask[:, 20:].all() and not mask[:, :20].any()  # left of x=20 lies left of the frame
    turned = cv2.getRotationMatrix2D((30.0, 20.0), 25.0, 0.6)
    for matrix in (shift, turned):
        warped = cv2.warpAffine(frame, matrix, (32, 32), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        mask = inside_mask(matrix, (64, 48), 32)
        assert (mask == (warped > 0)).mean() > 0.97  # the same picture, but for the edge's own pixels
        assert 0.05 < mask.mean() < 1
