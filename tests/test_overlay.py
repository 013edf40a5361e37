"""The overlay on a real video frame: what it draws, where, for how long; recording; the window."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from realtime import overlay
from realtime.overlay import Display, OverlayState, VideoSaver, track_colour
from realtime.types import Event, FaceObservation, RealtimeError
from tests.conftest import shared_video

STATS = {"fps": 29.7, "dropped": 2, "latency_ms": 41.0, "spotter": "flow", "status": None}


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_video("pyfeat_single_face.mp4")))
    ok, image = cap.read()
    cap.release()
    assert ok and image.shape == (360, 640, 3)
    return image


def face(track: int, box: tuple[float, float, float, float]) -> FaceObservation:
    return FaceObservation(
        track=track,
        index=0,
        timestamp=0.0,
        landmarks=np.zeros((478, 3), np.float32),
        blendshapes=np.zeros(52, np.float32),
        transform=np.eye(2, 3, dtype=np.float32),
        crop=np.zeros((112, 112, 3), np.uint8),
        box=box,
    )


def event(track: int = 0, kind: str = "micro", emitted: float = 4.5) -> Event:
    return Event(track, 123, 127, 131, 4.1, 4.37, "positive", 0.82, "flow", emitted, kind=kind)


# The face in pyfeat_single_face.mp4 sits roughly here in the first frame (640x360).
BOX = (215.0, 110.0, 380.0, 300.0)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of pixels that differ between two images."""
    return np.any(a != b, axis=2)


def test_draw_annotates_a_copy_inside_the_face_box(frame):
    before = frame.copy()
    sig = np.abs(np.random.default_rng(0).normal(0, 0.05, 120))
    out = OverlayState().draw(frame, [face(0, BOX)], {0: sig}, [event()], STATS, now_s=4.5)
    assert np.array_equal(frame, before), "the input frame must not be modified"
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    x0, y0, x1, y1 = map(int, BOX)
    # The box outline is drawn in the track's colour on its edges.
    edge = out[(y0 + y1) // 2, x0 - 1 : x0 + 2]
    assert any(np.abs(px.astype(int) - track_colour(0)).max() < 60 for px in edge)
    assert changed(out, frame)[y0 - 2 : y1 + 3, x0 - 2 : x1 + 3].sum() > 2 * (x1 - x0)
    # The inside of the face is not painted over (the plot and banners go around it).
    inner = changed(out, frame)[y0 + 40 : y1 - 10, x0 + 10 : x1 - 10]
    assert inner.mean() < 0.05


def test_banner_sits_next_to_its_face_and_macro_looks_different(frame):
    faces, sig = [face(0, BOX)], {0: np.zeros(90)}
    plain = OverlayState().draw(frame, faces, sig, [], STATS, now_s=4.5)
    micro = OverlayState().draw(frame, faces, sig, [event()], STATS, now_s=4.5)
    macro = OverlayState().draw(frame, faces, sig, [event(kind="macro")], STATS, now_s=4.5)
    x0, y0, x1, y1 = map(int, BOX)
    diff = changed(micro, plain)
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 2000, "a banner is a solid block of pixels"
    assert ys.max() < y0 and ys.min() >= 0, "the banner stands above the face box"
    assert xs.min() >= x0 - 1 and xs.min() < x1, "and starts at the box's left edge"
    block = micro[diff].astype(int)  # mostly the red micro fill (BGR)
    assert np.median(block[:, 2]) > 150 and np.median(block[:, 0]) < 100
    grey = macro[changed(macro, plain)].astype(int)
    assert np.median(np.abs(grey[:, 2] - grey[:, 0])) < 30, "macro banners are grey, not red"


def test_signal_plot_below_the_face_and_noise_stays_flat(frame):
    faces = [face(0, BOX)]
    x0, y0, x1, y1 = map(int, BOX)
    flat = OverlayState().draw(frame, faces, {0: np.zeros(90)}, [], {}, now_s=3.0)
    noise = np.random.default_rng(1).normal(0, 0.01, 90)  # far below the 0.5 floor
    spike = np.zeros(90)
    spike[60:66] = [0.5, 1.5, 3.0, 3.0, 1.5, 0.5]
    noisy = OverlayState().draw(frame, faces, {0: noise}, [], {}, now_s=3.0)
    spiky = OverlayState().draw(frame, faces, {0: spike}, [], {}, now_s=3.0)
    assert changed(flat, frame)[y1 + 1 :].sum() > 1000, "the plot panel is drawn below the face"
    rows_noise = np.nonzero(changed(noisy, flat).any(axis=1))[0]
    rows_spike = np.nonzero(changed(spiky, flat).any(axis=1))[0]
    panel_h = 0.12 * frame.shape[0]
    assert rows_spike.min() > y1 and np.ptp(rows_spike) >= 0.6 * panel_h, "movement fills it"
    assert rows_noise.size == 0 or np.ptp(rows_noise) <= 0.2 * panel_h, "noise stays flat"
    # Without the floor the same noise would be zoomed to the full panel height.
    zoomed = OverlayState(signal_floor=1e-6).draw(frame, faces, {0: noise}, [], {}, now_s=3.0)
    assert np.ptp(np.nonzero(changed(zoomed, flat).any(axis=1))[0]) >= 0.6 * panel_h


def test_faces_partly_outside_the_image_and_odd_boxes_do_not_crash(frame):
    h, w = frame.shape[:2]
    faces = [
        face(0, (-80.0, -60.0, 90.0, 100.0)),
        face(1, (w - 50.0, h - 30.0, w + 300.0, h + 200.0)),
        face(2, (float("nan"), 0.0, 10.0, 10.0)),
        face(3, (1e12, -1e12, 2e12, 3e12)),
        face(4, (300.0, 200.0, 250.0, 150.0)),  # corners swapped
    ]
    sigs = {0: np.linspace(0, 2, 90), 1: np.array([np.nan, np.inf, 1.0]), 3: np.ones(500)}
    events = [event(0), event(1, "macro"), event(3)]
    out = OverlayState().draw(frame, faces, sigs, events, STATS, now_s=4.5)
    assert out.shape == frame.shape
    assert changed(out, frame)[:60, :90].any() and changed(out, frame)[h - 30 :, w - 50 :].any()


def test_banners_fade_then_expire_in_stream_time(frame):
    faces, sig = [face(0, BOX)], {0: np.zeros(90)}
    state = OverlayState(banner_s=2.0, fade_s=0.5)
    reference = OverlayState(banner_s=2.0, fade_s=0.5)
    fresh = state.draw(frame, faces, sig, [event(emitted=10.0)], STATS, now_s=10.0)
    base = reference.draw(frame, faces, sig, [], STATS, now_s=10.0)
    strength = lambda img: np.abs(img.astype(int) - base.astype(int)).sum()  # noqa: E731
    full = strength(fresh)
    assert full > 0
    # Events arrive once (in events_new) but stay on screen for later frames.
    held = state.draw(frame, faces, sig, [], STATS, now_s=11.0)
    assert strength(held) == full
    fading = state.draw(frame, faces, sig, [], STATS, now_s=11.75)
    assert 0 < strength(fading) < 0.8 * full
    gone = state.draw(frame, faces, sig, [], STATS, now_s=12.01)
    assert np.array_equal(gone, reference.draw(frame, faces, sig, [], STATS, now_s=12.01))
    assert state.active(12.01) == {}
    # A clock that runs backwards is a new stream: old banners do not carry over.
    state.draw(frame, faces, sig, [event(emitted=20.0)], STATS, now_s=20.0)
    assert state.active(1.0) == {}


def test_banner_of_a_lost_face_still_shows(frame):
    state = OverlayState()
    plain = OverlayState().draw(frame, [], {}, [], STATS, now_s=5.0)
    out = state.draw(frame, [], {}, [event(track=7)], STATS, now_s=5.0)
    assert changed(out, plain).sum() > 2000


def status_bar_rows(frame: np.ndarray, size: tuple[int, int]) -> int:
    """Draw on ``frame`` resized to ``size``; the height of the darkened status band."""
    image = cv2.resize(frame, size)
    w, h = size
    box = (w * 0.33, h * 0.3, w * 0.6, h * 0.8)
    stats = dict(STATS, status="camera lost; reopening")
    out = OverlayState().draw(image, [face(0, box)], {0: np.ones(60)}, [event()], stats, now_s=4.5)
    assert out.shape == (h, w, 3) and changed(out, image)[int(box[1]) : int(box[3])].any()
    left = changed(out, image)[:, :3].all(axis=1)  # the band spans the full width
    rows = int(np.argmin(left)) if not left.all() else h
    assert out[:rows].astype(int).sum() < image[:rows].astype(int).sum(), "the band is dark"
    return rows


@pytest.mark.parametrize("size", [(320, 240), (1280, 720)])
def test_small_and_large_images_keep_text_legible(frame, size):
    assert status_bar_rows(frame, size) >= 12, "text below ~12 px cannot be read"


def test_font_scales_with_the_image(frame):
    small = status_bar_rows(frame, (320, 240))
    large = status_bar_rows(frame, (1280, 720))
    assert large > small


def test_status_accepts_an_object_and_rejects_bad_images(frame):
    @dataclass
    class Stats:
        fps: float = 12.0
        dropped: int = 0
        latency_ms: float = 80.0
        spotter: str = "fgsl"

    out = OverlayState().draw(frame, [], {}, [], Stats(), now_s=0.0)
    assert changed(out, frame)[:10].mean() > 0.9
    assert np.array_equal(OverlayState().draw(frame, [], {}, [], None, now_s=0.0), frame)
    with pytest.raises(RealtimeError, match="BGR uint8"):
        OverlayState().draw(frame[..., 0], [], {}, [], STATS, now_s=0.0)
    with pytest.raises(RealtimeError, match="BGR uint8"):
        OverlayState().draw(frame.astype(np.float32), [], {}, [], STATS, now_s=0.0)


def test_video_saver_writes_frames_opencv_reads_back(tmp_path, frame):
    path = tmp_path / "out.mp4"
    small = cv2.resize(frame, (320, 240))
    with VideoSaver(path, fps=25) as saver:
        assert not path.exists(), "opens lazily, on the first frame"
        for i in range(5):
            saver.write(small)
        saver.write(frame)  # another size (camera reopened): resized, not a broken file
        assert saver.frames == 6 and saver.size == (320, 240)
    saver.close()  # idempotent
    with pytest.raises(RealtimeError, match="closed"):
        saver.write(small)
    cap = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (240, 320, 3)
        count += 1
    assert count == 6
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25, abs=0.1)
    cap.release()


def test_video_saver_keeps_a_live_streams_clock(tmp_path, frame):
    """A camera at 30 fps whose frames the spotter saw at about 10 fps (the rest dropped) and
    one burst faster than 30 fps: the file still lasts as long as the stream did."""
    small = cv2.resize(frame, (160, 120))
    marks = [np.full_like(small, value) for value in (0, 80, 160, 240)]  # tell the frames apart
    times = [10.0, 10.1, 10.2, 10.21]  # stream time (a camera's starts when the capture does)
    with VideoSaver(tmp_path / "live.avi", fps=30) as saver:
        for image, at_s in zip(marks, times):
            saver.write(image, at_s)
        assert saver.frames == 7  # frames 0-6 cover 0.2 s at 30 fps; 10.21 s falls in frame 6, taken
    cap = cv2.VideoCapture(str(tmp_path / "live.avi"))
    levels = []
    while (got := cap.read())[0]:
        levels.append(int(round(got[1].mean() / 80)))
    cap.release()
    assert levels == [0, 0, 0, 1, 1, 1, 2]  # each image at its own time, held until the next one's


def test_video_saver_refuses_unwritable_paths(tmp_path, frame):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    not_utf8 = tmp_path / "out\udcff.mp4"  # (OpenCV's writer crashed the process on such a name)
    for bad in (blocker / "out.mp4", tmp_path, tmp_path / "no_suffix", tmp_path / "out.txt", not_utf8):
        with pytest.raises(RealtimeError, match="cannot write video"):
            with VideoSaver(bad, fps=30) as saver:
                saver.write(frame)
    with VideoSaver(tmp_path / "new" / "folder" / "out.avi", fps=30) as saver:  # made, like --events's
        saver.write(frame)
    assert (tmp_path / "new" / "folder" / "out.avi").stat().st_size > 0
    with pytest.raises(RealtimeError, match="fps"):
        VideoSaver(tmp_path / "x.mp4", fps=0)


def test_video_saver_reports_a_writer_that_does_not_open(tmp_path, frame, monkeypatch):
    class Closed:
        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(overlay.cv2, "VideoWriter", lambda *a, **k: Closed())
    saver = VideoSaver(tmp_path / "x.mp4", fps=30)
    with pytest.raises(RealtimeError, match="cannot write video"):
        saver.write(frame)


def test_display_without_a_screen_says_use_headless(monkeypatch):
    monkeypatch.setattr(overlay.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RealtimeError, match="no display available: use --headless"):
        Display("spotter")


needs_x = pytest.mark.skipif(not overlay._needs_x_server(), reason="this OpenCV's windows do not need an X server")


@needs_x
@pytest.mark.parametrize("display, wayland, where", [(":987", None, "no X server answers at DISPLAY=:987"),
                                                     (None, "wayland-0", "DISPLAY is not set")],
                         ids=["stale", "wayland-only"])
def test_a_display_without_an_x_server_says_use_headless(monkeypatch, display, wayland, where):
    """OpenCV's Qt build (xcb only) aborted the whole process (SIGABRT) on a stale DISPLAY
    or with only WAYLAND_DISPLAY set; it is refused before Qt is asked."""
    monkeypatch.setattr(overlay.sys, "platform", "linux")
    for name, value in (("DISPLAY", display), ("WAYLAND_DISPLAY", wayland)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(overlay.cv2, "namedWindow", lambda *a: pytest.fail("Qt was asked for a window"))
    with pytest.raises(RealtimeError, match=re.escape(f"no display available: use --headless ({where})")):
        Display("spotter")


def test_an_x_server_is_found_on_its_local_socket_or_its_tcp_port():
    """DISPLAY as libxcb reads it: the local socket (``:N``, ``unix:N``, ``unix/:N``) or TCP
    (``HOST:N``, ``tcp/HOST:N``, IPv6 bare or in brackets), with an optional screen."""
    import socket

    number = 900 + os.getpid() % 5000
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(f"\0/tmp/.X11-unix/X{number}")  # Linux's abstract socket, as an X server listens
        server.listen()
        for display in (f":{number}", f"unix:{number}.0", f"unix/:{number}"):
            assert not overlay.no_x_server_at(display), display
    assert overlay.no_x_server_at(f":{number}")
    listeners = [(socket.AF_INET, "127.0.0.1", ["127.0.0.1:{n}", "tcp/127.0.0.1:{n}.0"])]
    if socket.has_ipv6:
        listeners.append((socket.AF_INET6, "::1", ["[::1]:{n}", "::1:{n}"]))
    for family, host, forms in listeners:
        with socket.socket(family) as server:
            try:
                server.bind((host, 0))
            except OSError:  # (no IPv6 loopback in this container)
                continue
            port = server.getsockname()[1]
            if port <= 6000:
                continue
            server.listen()
            for form in forms:
                assert not overlay.no_x_server_at(form.format(n=port - 6000)), form
        assert overlay.no_x_server_at(forms[0].format(n=port - 6000))
    assert not overlay.no_x_server_at("not a display")  # read as Qt would: left to it


def test_display_when_opencv_cannot_open_a_window(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(overlay, "no_x_server_at", lambda display: False)

    def refuse(*args):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(overlay.cv2, "namedWindow", refuse)
    with pytest.raises(RealtimeError, match="use --headless"):
        Display("spotter")


def test_display_show_stops_on_q_esc_or_closed_window(monkeypatch, frame):
    """HighGUI replaced by fakes (no screen in CI): the key/close logic of ``show``."""
    keys, visible = [-1], [1.0]
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(overlay, "no_x_server_at", lambda display: False)
    monkeypatch.setattr(overlay.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(overlay.cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(overlay.cv2, "waitKey", lambda *a: keys[0])
    monkeypatch.setattr(overlay.cv2, "getWindowProperty", lambda *a: visible[0])
    monkeypatch.setattr(overlay.cv2, "destroyWindow", lambda *a: None)
    for key, vis, expected in [(-1, 1.0, True), (ord("q"), 1.0, False), (27, 1.0, False),
                               (-1, 0.0, False)]:
        keys[0], visible[0] = key, vis
        with Display("spotter") as display:
            assert display.show(frame) is expected
            if not expected:
                assert display.show(frame) is False  # stays stopped
        display.close()  # idempotent


def test_video_saver_replaces_an_earlier_video_only_when_kept(tmp_path, frame):
    """The frames go to a hidden file beside the target: ``keep=False`` (``realtime.cam`` before
    the first face) leaves an earlier video as it was; kept, the new one replaces it whole."""
    path = tmp_path / "out.mp4"
    path.write_bytes(b"an earlier video")
    with VideoSaver(path, fps=30, keep=False) as saver:
        saver.write(frame)
        assert path.read_bytes() == b"an earlier video"  # (not truncated while writing either)
    assert path.read_bytes() == b"an earlier video" and sorted(tmp_path.iterdir()) == [path]
    with VideoSaver(path, fps=30) as saver:
        for _ in range(3):
            saver.write(frame)
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and sorted(tmp_path.iterdir()) == [path]
    cap.release()


def test_video_saver_refuses_a_video_that_does_not_read_back_whole(tmp_path, frame, monkeypatch):
    """OpenCV's writer drops failed writes silently; the check at close reads the file back
    (a real full disk: tests/test_cam.py, with a file size limit)."""
    path = tmp_path / "out.mp4"
    path.write_bytes(b"an earlier video")
    saver = VideoSaver(path, fps=30, name=f"--save {path}")
    saver.write(frame)
    saver.write(frame)
    saver.frames += 1  # one frame more than the file holds, as when a write failed
    with pytest.raises(RealtimeError, match=r"^--save .*out\.mp4: the video could not be written whole "
                                            r"\(OpenCV reads back 2 of the 3 frames written"):
        saver.close()
    assert path.read_bytes() == b"an earlier video" and sorted(tmp_path.iterdir()) == [path]


def test_banners_of_two_faces_cover_no_eyes_and_not_each_other(frame):
    """Two faces near the top of the picture (a webcam's framing), no room above them: each
    face's banners go beside it, over neither face's eyes and brows (its box's upper half) nor
    over the other face's banners (before, they were pushed down onto the face)."""
    image = cv2.resize(frame, (960, 480))
    faces = [face(0, (120.0, 40.0, 360.0, 330.0)), face(1, (560.0, 40.0, 800.0, 330.0))]
    sigs = {0: np.zeros(90), 1: np.zeros(90)}
    both = [event(0), event(1)]

    def drawn(events):
        return OverlayState().draw(image, faces, sigs, events, STATS, now_s=4.5)

    plain = drawn([])
    masks = [changed(drawn([e]), plain) for e in both]
    together = changed(drawn(both), plain)
    assert all(m.sum() > 2000 for m in masks)
    for x0, y0, x1, y1 in (map(int, f.box) for f in faces):
        assert not together[y0 + 2 : (y0 + y1) // 2, x0 + 2 : x1 - 1].any(), "a banner covers a face's eyes"
    assert not (masks[0] & masks[1]).any() and together.sum() == (masks[0] | masks[1]).sum()


def test_a_stack_does_not_move_when_its_oldest_banner_expires(frame):
    """The newest banner sits nearest the face; the oldest, fading out at the far end, takes
    nothing with it when it goes (before, the whole stack dropped by a banner's height)."""
    faces, sig = [face(0, BOX)], {0: np.zeros(90)}
    state = OverlayState(banner_s=2.5, fade_s=0.6)
    state.draw(frame, faces, sig, [event(emitted=10.0)], STATS, now_s=10.0)
    state.draw(frame, faces, sig, [event(emitted=11.0)], STATS, now_s=11.0)
    last_together = state.draw(frame, faces, sig, [], STATS, now_s=12.45)
    assert len(state.active(12.45)[0]) == 2
    alone = state.draw(frame, faces, sig, [], STATS, now_s=12.55)
    assert len(state.active(12.55)[0]) == 1
    plain = OverlayState().draw(frame, faces, sig, [], STATS, now_s=12.55)
    newest = changed(alone, plain)
    newest[:40] = False  # (the status bar)
    assert newest.sum() > 1000 and np.array_equal(last_together[newest], alone[newest])


def test_layout_follows_a_shaking_face_smoothly(frame):
    """A talking head's landmark box shakes by a few pixels a frame; the banner beside it moves
    by far less (before, it shook with the box), and follows a face that really moved."""
    state, sig = OverlayState(), {0: np.zeros(90)}
    plain = OverlayState()
    tops = []
    for i in range(12):
        dy = 4.0 if i % 2 else -4.0
        box = (BOX[0], BOX[1] + dy, BOX[2], BOX[3] + dy)
        out = state.draw(frame, [face(0, box)], sig, [event(emitted=4.5)] if i == 0 else [], STATS, now_s=4.5 + i / 30)
        ref = plain.draw(frame, [face(0, box)], sig, [], STATS, now_s=4.5 + i / 30)
        rows = np.nonzero(changed(out, ref)[40:].any(axis=1))[0]
        tops.append(int(rows.min()))
    assert max(tops[4:]) - min(tops[4:]) <= 4, tops  # the raw box moves 8 px every frame
    moved = (BOX[0], BOX[1] + 60, BOX[2], BOX[3] + 60)  # more than a quarter of its size: a jump, followed at once
    out = state.draw(frame, [face(0, moved)], sig, [], STATS, now_s=5.0)
    ref = plain.draw(frame, [face(0, moved)], sig, [], STATS, now_s=5.0)
    assert int(np.nonzero(changed(out, ref)[40:].any(axis=1))[0].min()) > max(tops) + 40


def test_the_plot_has_the_spotters_threshold_and_fills_what_crosses_it(frame):
    """With the spotter's threshold the scale is fixed (0 to twice the threshold), a dashed
    line marks it, and what crosses it is filled with a dim tint of the face's colour (not the
    events' red: a crossing is no verdict): a peak can be read against the verdicts."""
    faces = [face(0, BOX)]
    x0, y0, x1, y1 = map(int, BOX)
    under, over = np.full(90, 2.5), np.zeros(90)
    over[40:50] = 5.0

    def panel(values, threshold=3.0):
        state = OverlayState(signal_threshold=threshold)
        return state.draw(frame, faces, {0: values}, [], {}, now_s=3.0)[y1 + 1 :].astype(int)

    behind = frame[y1 + 1 :].astype(float)  # the panel is pasted at 85 % opacity over the frame
    painted = lambda img, bgr: (np.abs(img - (0.85 * np.asarray(bgr) + 0.15 * behind)).max(axis=2) < 3).sum()  # noqa: E731
    tint = np.floor(np.asarray(track_colour(0)) * 0.45)
    assert painted(panel(under), tint) == 0 and painted(panel(over), tint) > 50
    assert painted(panel(over), overlay.MICRO_FILL) == 0
    # The scale is fixed: the same step of 1.5 fills a quarter of the scale at threshold 3,
    # where the plot without a threshold zooms it to the whole panel.
    step = np.r_[np.zeros(45), np.full(45, 1.5)]
    rows = lambda img: np.nonzero(changed(img, panel(np.zeros(90))).any(axis=1))[0]  # noqa: E731
    zoomed = OverlayState().draw(frame, faces, {0: step}, [], {}, now_s=3.0)[y1 + 1 :].astype(int)
    assert np.ptp(rows(panel(step))) < 0.5 * np.ptp(rows(zoomed))
    assert np.ptp(rows(panel(step, threshold=1.0))) > np.ptp(rows(panel(step)))  # (a lower threshold: taller)


def test_a_face_without_a_signal_gets_no_empty_plot_and_untrained_is_said(frame):
    """The FGSL spotter has no signal to plot: no empty panel under the face. Untrained weights
    are said on the picture itself, in the warning colour, as on the console."""
    faces = [face(0, BOX)]
    x0, y0, x1, y1 = map(int, BOX)
    bare = OverlayState().draw(frame, faces, {}, [], {}, now_s=1.0)
    assert not changed(bare, frame)[y1 + 3 :].any()
    amber = lambda img: (np.abs(img[:40].astype(int) - overlay.WARN_COLOUR).max(axis=2) < 40).sum()  # noqa: E731
    trained = OverlayState().draw(frame, faces, {}, [], {"spotter": "fgsl", "untrained": False}, now_s=1.0)
    untrained = OverlayState().draw(frame, faces, {}, [], {"spotter": "fgsl", "untrained": True}, now_s=1.0)
    assert amber(trained) == 0 and amber(untrained) > 30


def test_fps_and_latency_are_refreshed_twice_a_second_not_every_frame(frame):
    """Numbers redrawn every frame flicker (738, 727, 705, 817 ms...) and cannot be read."""
    state = OverlayState(stats_s=0.5)
    bar = lambda img: img[:30]  # noqa: E731
    first = state.draw(frame, [], {}, [], {"fps": 10.0, "latency_ms": 700.0}, now_s=0.0)
    soon = state.draw(frame, [], {}, [], {"fps": 24.0, "latency_ms": 20.0}, now_s=0.3)
    later = state.draw(frame, [], {}, [], {"fps": 24.0, "latency_ms": 20.0}, now_s=0.6)
    assert np.array_equal(bar(first), bar(soon)) and not np.array_equal(bar(first), bar(later))
    dropped = state.draw(frame, [], {}, [], {"fps": 30.0, "latency_ms": 5.0, "dropped": 3}, now_s=0.7)
    assert not np.array_equal(bar(later), bar(dropped))  # drops and status are said at once


def test_the_box_is_drawn_where_the_face_is_also_when_it_moves(frame):
    """The box shows the tracker's measurement: a face moving 12 px a frame is boxed where it
    is in every frame (a smoothed box lagged up to 33 px behind and jumped back)."""
    state, sig = OverlayState(), {0: np.zeros(90)}
    for i in range(12):
        box = (BOX[0] + 12 * i, BOX[1], BOX[2] + 12 * i, BOX[3])
        out = state.draw(frame, [face(0, box)], sig, [], {}, now_s=i / 30)
        x0, yc = int(box[0]), int((box[1] + box[3]) / 2)
        assert any(np.abs(out[yc, x].astype(int) - track_colour(0)).max() < 60 for x in range(x0 - 1, x0 + 2)), i


def test_a_frame_full_of_faces_puts_banners_where_no_eyes_are(frame):
    """Eight faces in the top half of the frame, nothing free beside them: their banners go to
    the free lower half (before: across the eyes of the faces next to them)."""
    image = cv2.resize(frame, (640, 480))
    faces = [face(i, (10.0 + 80 * i, 40.0, 80.0 + 80 * i, 180.0)) for i in range(8)]
    sigs = {i: np.zeros(90) for i in range(8)}
    state = OverlayState()
    plain = OverlayState().draw(image, faces, sigs, [], STATS, now_s=4.5)
    out = state.draw(image, faces, sigs, [event(i) for i in range(8)], STATS, now_s=4.5)
    banners = changed(out, plain)
    for f in faces:
        x0, y0, x1, y1 = map(int, f.box)
        assert not banners[y0 + 2 : (y0 + y1) // 2, x0 + 2 : x1 - 1].any(), f.track
    assert banners[240:].sum() > 8 * 1000  # (all eight are on screen, below the faces)


def test_the_overlay_forgets_faces_that_are_gone_and_draws_tiny_frames(frame):
    """Everything it keeps per face goes with the face (a long session meets thousands), and a
    frame too small for a plot gets none instead of an OpenCV error."""
    state = OverlayState()
    for track in range(300):
        state.draw(frame, [face(track, BOX)], {track: np.zeros(90)}, [], {}, now_s=track / 30)
    assert len(state._anchors) == 1 and {key[0] for key in state._sides} == {299}
    for shape in ((2, 2, 3), (3, 3, 3), (3, 8, 3), (12, 16, 3)):
        tiny = np.zeros(shape, np.uint8)
        assert state.draw(tiny, [face(0, (0.0, 0.0, 1.0, 1.0))], {0: np.ones(5)}, [event()], STATS, 5.0).shape == shape


@pytest.mark.parametrize("box, jaw", [((40, 30, 360, 380), 4), ((80, 100, 360, 420), 8), ((40, 30, 400, 420), 14)])
def test_a_banner_stays_put_while_the_jaw_moves(frame, box, jaw):
    """A close-up face (480x480, the expressions video's framing) leaves its banner only
    crowded places; a talking jaw moves the box's bottom by a few pixels, and the banner must
    not jump between places (it did, about once a second, in the demo's live tab)."""
    image = cv2.resize(frame, (480, 480))
    sig = {0: np.zeros(90)}
    state, plain = OverlayState(signal_threshold=3.0), OverlayState(signal_threshold=3.0)
    places = []
    for i in range(15):
        moved = (*map(float, box[:3]), float(box[3] + (jaw if i % 3 else 0)))
        out = state.draw(image, [face(0, moved)], sig, [event(emitted=4.5)] if i == 0 else [], STATS, now_s=4.5 + i / 30)
        ref = plain.draw(image, [face(0, moved)], sig, [], STATS, now_s=4.5 + i / 30)
        banner = changed(out, ref)
        banner[:30] = False  # (the status bar)
        ys, xs = np.nonzero(banner)
        places.append((int(xs.min()), int(ys.min())))
    assert len(set(places[1:])) == 1, places


def test_text_is_sized_for_the_width_a_page_shows_the_frame_at(frame):
    """The demo shows a 960 px frame about 575 px wide: text sized for 960 px was 6-7 px high
    there. With ``shown_width`` it is enlarged by the shrink, so it reads at the shown size."""
    image = cv2.resize(frame, (960, 480))
    stats = {"fps": 25.0, "spotter": "flow"}

    def band_rows(state):
        out = state.draw(image, [], {}, [], stats, now_s=1.0)
        dark = changed(out, image)[:, :3].all(axis=1)
        return int(np.argmin(dark))

    native, shown = band_rows(OverlayState()), band_rows(OverlayState(shown_width=576))
    assert shown >= native * 1.4  # 960 / 576 = 1.67 times the text, a little less band (padding)
    assert band_rows(OverlayState(shown_width=1920)) == native  # shown larger: sized for the frame
