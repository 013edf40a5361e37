"""Capture on real video: files never drop, live cameras keep the newest frames and reconnect.

Live cameras are played by :class:`tests.fakes.FakeCamera`, a ``cv2.VideoCapture`` stand-in that serves the
real frames of ``pyfeat_single_face.mp4`` and fails on command, so disconnects, slow consumers
and dead cameras are tested without hardware.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from fgsl.data.frames import VideoError
from realtime.capture import (
    BEHIND_S,
    DEFAULT_CAMERA_FPS,
    CameraSource,
    Capture,
    FileSource,
    parse_source,
)
from realtime.types import Frame, RealtimeError
from tests.conftest import shared_video
from tests.fakes import FakeCamera, scripted_opener

VIDEO = "pyfeat_single_face.mp4"
FAST_BACKOFF = (0.02, 0.08)


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    """Every frame of the test video as OpenCV decodes it (the reference for all comparisons)."""
    cap = cv2.VideoCapture(str(shared_video(VIDEO)))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == 72
    return frames


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# -- files and folders -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_file_delivers_every_frame_in_order(real_frames):
    path = shared_video(VIDEO)
    with Capture(parse_source(None, str(path))) as capture:
        assert capture.fps == pytest.approx(30.0) and capture.name == str(path)
        frames = list(capture)
    assert len(frames) == len(real_frames) == 72
    assert [f.index for f in frames] == list(range(72))
    assert [f.timestamp for f in frames] == pytest.approx([i / 30.0 for i in range(72)])
    for frame, expected in zip(frames, real_frames):
        assert isinstance(frame, Frame) and frame.image.dtype == np.uint8
        assert np.array_equal(frame.image, expected)
    assert all(a.captured <= b.captured for a, b in zip(frames, frames[1:]))
    stats = capture.stats
    assert (stats.read, stats.delivered, stats.dropped, stats.reconnects) == (72, 72, 0, 0)
    assert not stats.live and stats.status == ""
    assert not capture.running


@pytest.mark.timeout(30)
def test_file_with_slow_consumer_still_drops_nothing():
    capture = Capture(FileSource(shared_video(VIDEO)), queue_size=2)
    indices = []
    for frame in capture:
        indices.append(frame.index)
        if frame.index < 6:
            time.sleep(0.02)  # the reader fills the small queue and must wait, not drop
    assert indices == list(range(72))
    assert capture.stats.dropped == 0 and not capture.running


@pytest.mark.timeout(30)
def test_frame_folder_uses_the_given_fps(tmp_path, real_frames):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img{i + 1:03d}.png"), real_frames[i * 10])
    frames = list(Capture(parse_source(None, tmp_path, fps=25.0)))
    assert [f.index for f in frames] == list(range(5))
    assert [f.timestamp for f in frames] == pytest.approx([i / 25 for i in range(5)])
    for i, frame in enumerate(frames):
        assert np.array_equal(frame.image, real_frames[i * 10])  # PNG is lossless


@pytest.mark.timeout(30)
def test_broken_image_mid_folder_ends_the_stream_with_an_error(tmp_path, real_frames):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img{i + 1:03d}.png"), real_frames[i])
    (tmp_path / "img004.png").write_bytes(b"not a png at all")
    capture = Capture(FileSource(tmp_path, fps=30.0))
    seen = []
    with pytest.raises(RealtimeError) as exc:
        for frame in capture:
            seen.append(frame.index)
    assert seen == [0, 1, 2]
    assert "img004.png" in one_line(exc)
    assert not capture.running


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_source_is_not_the_current_folder(empty):
    """``Path("")`` is ``.``: an empty --source (an unset shell variable) read as a frame folder."""
    with pytest.raises(RealtimeError, match="^--source is empty"):
        parse_source(None, empty)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(RealtimeError) as exc:
        Capture(parse_source(None, tmp_path / "nothere.mp4"))
    assert "nothere.mp4" in one_line(exc) and "no such" in str(exc.value)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(RealtimeError) as exc:
        Capture(parse_source(None, bad))
    assert "broken.mp4" in one_line(exc)
    with pytest.raises(RealtimeError) as exc:  # a folder needs a frame rate
        cv2.imwrite(str(tmp_path / "f1.png"), np.zeros((4, 4, 3), np.uint8))
        Capture(parse_source(None, tmp_path))
    assert "fps" in one_line(exc)
    assert not issubclass(RealtimeError, VideoError)  # one error type out of capture: converted


def test_parse_source_needs_exactly_one_valid_source():
    for device, path in ((None, None), (0, "a.mp4")):
        with pytest.raises(RealtimeError, match="exactly one source"):
            parse_source(device, path)
    with pytest.raises(RealtimeError, match="camera index"):
        parse_source(-1, None)
    with pytest.raises(RealtimeError, match="fps"):
        parse_source(None, "a.mp4", fps=0)
    assert isinstance(parse_source(0, None), CameraSource)
    assert parse_source(0, None).name == "camera 0"
    assert isinstance(parse_source(None, "rtsp://host/stream"), CameraSource)
    assert isinstance(parse_source(None, "a.mp4"), FileSource)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null on this system")
def test_a_device_node_is_a_camera_not_a_file():
    """``--source /dev/video2`` (or /dev/v4l/by-id/...) gets the camera policy: newest frames,
    reconnects. /dev/null stands in for the camera node: both are character devices."""
    source = parse_source(None, "/dev/null")
    assert isinstance(source, CameraSource) and source.name == "camera /dev/null"
    with pytest.raises(RealtimeError, match="^camera /dev/null: cannot open"):
        Capture(source)


@pytest.mark.timeout(30)
def test_realtime_pacing_follows_the_file_clock():
    capture = Capture(FileSource(shared_video(VIDEO)), realtime=True)
    start = time.monotonic()
    waits = []  # from a paced frame's arrival to its taking, for a consumer that keeps up
    for frame in capture:
        waits.append(time.monotonic() - frame.captured)
        if frame.index == 20:
            break
    elapsed = time.monotonic() - start
    capture.stop()
    assert elapsed >= 0.5  # frame 20 is due at 20/30 s; without pacing it takes ~0.05 s
    # A paced frame is stamped when it is due, not when it was decoded a frame period earlier,
    # so latency shown for it is the pipeline's, not the pacing's (it was about 33 ms).
    assert np.median(waits) < 0.02
    assert elapsed < 10
    assert not capture.running


@pytest.mark.timeout(30)
def test_a_realtime_file_the_spotter_cannot_keep_up_with_is_said_once():
    """A file paced at its clock never drops frames, so a consumer slower than real time only
    falls behind: said once when over BEHIND_S, not per frame, and not for one that keeps up."""
    said: list[str] = []
    capture = Capture(FileSource(shared_video(VIDEO)), realtime=True, on_outage=said.append)
    for frame in capture:
        time.sleep(2.5 / 30)  # 2.5 times slower than the file's 30 fps
        if frame.index == 45:  # 1.5 s of file, about 3.75 s of consumer
            break
    capture.stop()
    assert len(said) == 1 and said[0].startswith(f"{capture.name}: --realtime: the spotter is more than "
                                                 f"{BEHIND_S:g} s behind the file's clock"), said
    keeping_up: list[str] = []
    capture = Capture(FileSource(shared_video(VIDEO)), realtime=True, on_outage=keeping_up.append)
    assert len(list(capture)) > 60 and keeping_up == []


@pytest.mark.timeout(30)
def test_stop_mid_stream_is_prompt():
    # Producer blocked on a full queue (consumer stopped taking frames).
    capture = Capture(FileSource(shared_video(VIDEO)), queue_size=2).start()
    first = next(iter(capture))
    assert first.index == 0
    time.sleep(0.1)
    start = time.monotonic()
    capture.stop()
    assert time.monotonic() - start < 1.0 and not capture.running
    assert list(capture) == []  # a stopped capture yields nothing more
    # Producer waiting on the --realtime clock.
    paced = Capture(FileSource(shared_video(VIDEO)), realtime=True).start()
    start = time.monotonic()
    paced.stop()
    assert time.monotonic() - start < 1.0 and not paced.running


# -- live cameras (fake reader, real frames) --------------------------------------------


@pytest.mark.timeout(30)
def test_slow_consumer_drops_oldest_and_sees_newest(real_frames):
    camera = FakeCamera(real_frames, period_s=0.001, fps=60.0)
    capture = Capture(CameraSource("camera 0", scripted_opener(camera)), queue_size=2)
    assert capture.fps == 60.0 and capture.live
    got = []
    with capture:
        frames = iter(capture)
        for _ in range(8):
            read_before = capture.stats.read
            frame = next(frames)
            # Only the newest queue_size frames are kept: nothing older than that can come out.
            assert frame.index >= read_before - 2
            got.append(frame)
            time.sleep(0.03)
    stats = capture.stats
    indices = [f.index for f in got]
    assert indices == sorted(set(indices))  # strictly increasing
    assert indices[-1] - indices[0] > len(indices)  # gaps: frames were skipped
    assert stats.dropped > 0
    assert stats.read - stats.delivered - stats.dropped <= 2  # the rest is at most the queue
    for frame in got:  # each index carries the image the camera produced for it
        assert np.array_equal(frame.image, real_frames[frame.index % len(real_frames)])
    assert all(b.timestamp > a.timestamp >= 0 for a, b in zip(got, got[1:]))
    assert not capture.running and camera.released


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fails_as", ["raise", "empty"])
def test_a_read_that_raises_or_gives_an_empty_image_is_an_outage(real_frames, fails_as):
    """Drivers signal an unplugged camera in these ways too: a reconnect follows, indices go on."""
    first = FakeCamera(real_frames[:10], fail_after=10, fails_as=fails_as)
    second = FakeCamera(real_frames[10:], fail_after=5, fails_as=fails_as)
    capture = Capture(CameraSource("camera 0", scripted_opener(first, second)), queue_size=100, give_up_s=0.5,
                      backoff_s=FAST_BACKOFF)
    frames = []
    with pytest.raises(RealtimeError, match="camera 0"):
        frames.extend(capture)
    assert [f.index for f in frames] == list(range(15)) and capture.stats.reconnects == 1
    assert all(np.array_equal(f.image, real_frames[f.index]) for f in frames)


def test_camera_reconnects_and_keeps_counting(real_frames):
    statuses, after_reconnect = [], []
    capture: Capture | None = None

    def on_open(n: int) -> None:
        if n > 0:  # a reopen: capture must be reporting the outage right now
            statuses.append(capture.stats.status)

    def on_second_read(n: int) -> None:
        if n == 2:  # two frames have flowed since the reconnect
            after_reconnect.append(capture.stats)

    first = FakeCamera(real_frames[:10], fail_after=10)
    second = FakeCamera(real_frames[10:], fail_after=15, on_read=on_second_read)

    # Reopens: first a camera that will not open, then the working one.
    opener = scripted_opener(first, FakeCamera([], opened=False), second,
                             FakeCamera([], opened=False), on_open=on_open)
    capture = Capture(CameraSource("camera 0", opener), queue_size=100, give_up_s=0.5, backoff_s=FAST_BACKOFF)
    frames = []
    with pytest.raises(RealtimeError):  # after the second camera's 15 frames, it gives up
        frames.extend(capture)
    assert [f.index for f in frames] == list(range(25))  # no gap, no restart at 0
    for frame in frames:
        assert np.array_equal(frame.image, real_frames[frame.index])
    assert first.released and second.released
    assert statuses and all(s.startswith("camera 0 lost; reopening in 0.") for s in statuses)
    assert after_reconnect[0].status == "" and after_reconnect[0].reconnects == 1  # status cleared
    stats = capture.stats
    assert stats.reconnects == 1 and stats.dropped == 0 and stats.read == 25


@pytest.mark.timeout(30)
def test_permanent_outage_ends_with_a_clear_error(real_frames):
    camera = FakeCamera(real_frames, fail_after=5)
    attempts = []

    def opener():
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            return camera
        raise RuntimeError("driver says no")  # an opener that raises counts as a failed open

    capture = Capture(CameraSource("camera 3", opener), queue_size=100, give_up_s=0.3, backoff_s=FAST_BACKOFF)
    seen = []
    start = time.monotonic()
    with pytest.raises(RealtimeError) as exc:
        for frame in capture:
            seen.append(frame.index)
    elapsed = time.monotonic() - start
    message = one_line(exc)
    assert message.startswith("camera 3 lost") and "0.3 s" in message
    assert seen == [0, 1, 2, 3, 4]
    assert 0.3 <= elapsed < 5
    assert len(attempts) >= 3  # it kept trying, with backoff, before giving up
    gaps = np.diff(attempts[1:])
    assert (gaps >= FAST_BACKOFF[0] * 0.9).all()
    assert not capture.running and camera.released
    assert capture.stats.status == "camera 3 given up"  # not "reopening in ..." any more


def test_a_camera_that_opens_but_never_gives_a_frame_is_not_called_lost(real_frames):
    told: list[str] = []
    never = FakeCamera(real_frames, fail_after=0)
    capture = Capture(CameraSource("camera 1", scripted_opener(never)), give_up_s=0.3, backoff_s=FAST_BACKOFF,
                      on_outage=told.append)
    with pytest.raises(RealtimeError, match=r"^camera 1 gave no frame since it was opened: no frames for"):
        list(capture)
    assert told == ["camera 1 gives no frames: reopening it (giving up after 0.3 s)"]


def test_camera_that_cannot_be_opened_is_a_clear_error(real_frames):
    dead = FakeCamera(real_frames, opened=False)
    with pytest.raises(RealtimeError) as exc:
        Capture(CameraSource("camera 5", scripted_opener(dead)))
    assert one_line(exc).startswith("camera 5: cannot open")
    assert dead.released
    with pytest.raises(RealtimeError, match="camera 97: cannot open"):  # the real OpenCV path
        Capture(parse_source(97, None))


def test_camera_without_a_reported_rate_assumes_the_default(real_frames):
    capture = Capture(CameraSource("camera 0", scripted_opener(FakeCamera(real_frames, fps=0.0))))
    assert capture.fps == DEFAULT_CAMERA_FPS
    capture.stop()  # never started: stop releases the camera it opened
    assert not capture.running


@pytest.mark.timeout(30)
def test_stop_during_camera_backoff_is_prompt(real_frames):
    camera = FakeCamera(real_frames, fail_after=3)
    capture = Capture(CameraSource("camera 0", scripted_opener(camera, FakeCamera([], opened=False))),
                      give_up_s=60, backoff_s=(30.0, 60.0)).start()
    deadline = time.monotonic() + 5
    while "lost" not in capture.stats.status and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "reopening in 30.0 s" in capture.stats.status
    start = time.monotonic()
    capture.stop()
    assert time.monotonic() - start < 1.0 and not capture.running


def test_a_file_url_is_read_as_a_file(real_frames):
    path = shared_video(VIDEO)
    source = parse_source(None, path.resolve().as_uri())
    assert isinstance(source, FileSource) and source.path == path.resolve()
    with Capture(source) as capture:
        assert sum(1 for _ in capture) == len(real_frames)
    assert parse_source(None, "FILE://localhost" + path.resolve().as_uri()[7:]).path == path.resolve()
    with pytest.raises(RealtimeError, match="a file URL on another host"):
        parse_source(None, "file://server/share/a.mp4")


def test_a_frame_folder_needs_fps_from_the_command_line(tmp_path):
    with pytest.raises(RealtimeError, match=r"a folder of frames has no frame rate of its own; pass it with --fps$"):
        parse_source(None, str(tmp_path))


class _Recording(FakeCamera):
    """A camera that reports a frame count and its position, as OpenCV does for a video file."""

    def __init__(self, frames: list[np.ndarray], count: int, fail_after: int) -> None:
        super().__init__(frames, fail_after=fail_after)
        self.count = count

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(self.count)
        if prop == cv2.CAP_PROP_POS_FRAMES:
            return float(self.reads)
        return super().get(prop)


def test_a_recording_that_breaks_off_is_an_error_not_a_replay(real_frames):
    opener = scripted_opener(_Recording(real_frames, count=60, fail_after=20))
    capture = Capture(CameraSource("stream http://x/clip.avi", opener), give_up_s=5.0, backoff_s=FAST_BACKOFF,
                      queue_size=100)
    got = []
    with pytest.raises(RealtimeError, match=r"broke off at frame 20 of 60"):
        for frame in capture:
            got.append(frame)
    assert len(got) == 20 and opener.calls["n"] == 1


def test_a_recording_served_over_http_ends_instead_of_replaying(tmp_path, real_frames):
    """A URL is live (reopened when it stops) unless it reports a frame count: then it ends.

    The real frames go into an MJPG .avi, which streams without seeking (Python's test
    server cannot serve the byte ranges an mp4 with its index at the end needs)."""
    import functools
    import http.server
    import threading

    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0,
                             real_frames[0].shape[1::-1])
    for image in real_frames:
        writer.write(image)
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        capture = Capture(parse_source(None, f"http://127.0.0.1:{server.server_address[1]}/clip.avi"),
                          give_up_s=5.0, backoff_s=FAST_BACKOFF, queue_size=len(real_frames) * 3)
        assert capture.live
        frames = []
        for frame in capture:  # a replaying stream would run past three plays and fail below
            frames.append(frame)
            if len(frames) > 3 * len(real_frames):
                break
        capture.stop()
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) == len(real_frames) and capture.stats.reconnects == 0
