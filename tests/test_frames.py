"""Video files read through fgsl.data.frames: a damaged or truncated file is not read silently
as a shorter video."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from fgsl.data.frames import VideoError, cut_short, open_source
from fgsl.data.synthetic import Recipe, make_set, write_video
from tests.conftest import SAMPLE_VIDEO, SHARED_DATA, shared_video


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> Path:
    """The first half of a faststart copy of the 1,008-frame shared video: its index (at the
    front) still lists every frame, its data stops about half-way."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg program to move the video's index to the front")
    folder = tmp_path_factory.mktemp("truncated")
    whole = folder / "faststart.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(shared_video("liveportrait_d6_expressions.mp4")),
                    "-c", "copy", "-movflags", "+faststart", str(whole)], check=True)
    half = folder / "half.mp4"
    data = whole.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    return half


def test_a_file_name_opencv_cannot_take_is_one_clear_error(tmp_path):
    """A name that is not UTF-8 (bytes a Linux name may hold) crashed the process inside
    OpenCV, reading (VideoCapture) and writing (VideoWriter) alike: a segmentation fault,
    no message. It is refused in one line, through the command line too."""
    name = os.fsdecode(b"clip\xff.mp4")
    shutil.copy(SAMPLE_VIDEO, tmp_path / name)
    with pytest.raises(VideoError, match=r"the file name is not valid UTF-8, which OpenCV's video reader and writer "
                                         r"cannot take \(rename the file\)"):
        open_source(tmp_path / name)
    with pytest.raises(VideoError, match="not valid UTF-8"):
        write_video(tmp_path / os.fsdecode(b"out\xff.avi"), np.zeros((2, 16, 16, 3), np.uint8), 30.0)
    done = subprocess.run([sys.executable, "-m", "realtime.cam", "--source", str(tmp_path / name), "--headless"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines()[-1].endswith("the file name is not valid UTF-8, which OpenCV's video "
                                                         "reader and writer cannot take (rename the file)")


@pytest.mark.parametrize("rate", [20000.0, 0.5])
def test_a_file_reporting_a_rate_out_of_range_is_refused_until_its_rate_is_given(tmp_path, rate):
    """A container reporting its time base (90000) or a time-lapse rate: the live spotter took
    it as the frame rate (a writer that would not open, or a new track at every frame)."""
    odd = tmp_path / "odd.mp4"
    if rate > 600:  # (OpenCV's AVI writer stores at most 600)
        if shutil.which("ffmpeg") is None:
            pytest.skip("needs the ffmpeg program to write such a rate")
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x64:d=0.1:r=30", "-vf",
                        f"setpts=N/({rate:g}*TB)", "-r", f"{rate:g}", "-video_track_timescale", f"{rate:g}", str(odd)],
                       check=True)
    else:
        write_video(odd, np.zeros((3, 16, 16, 3), np.uint8), rate)
    with pytest.raises(VideoError, match=rf"odd\.mp4: the file reports {rate:g} frames per second, outside "
                                         r"1-10000 \(too slow to show a micro-expression, or a wrong header\): give "
                                         r"its real rate with --fps where the command has it, or re-encode"):
        open_source(odd)
    assert open_source(odd, 30.0).fps == 30.0


def test_a_truncated_video_is_read_with_one_warning(truncated):
    with pytest.warns(UserWarning) as caught:
        frames = sum(1 for _ in open_source(truncated))
    assert 0 < frames < 1008
    assert [str(w.message) for w in caught] == [
        f"{truncated}: decoding stopped at frame {frames} of 1008 (damaged or truncated file)"]


def test_a_cli_shows_the_warning_once(truncated, tmp_path):
    """Through fgsl.cli.run, as every command shows a warning: one ``warning:`` line."""
    run = subprocess.run([sys.executable, "-m", "fgsl.data.synthetic", "--videos", str(truncated), "--out", str(tmp_path),
                          "--count", "1", "--frames", "16", "--size", "32", "--no-events"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # (the progress bar's line is not ended before a warning yet: fgsl.cli's warning printer)
    found = re.findall(r"warning: (.*)$", run.stderr, flags=re.MULTILINE)
    assert len(found) == 1, run.stderr
    assert re.fullmatch(re.escape(f"{truncated}: decoding stopped at frame ") + r"\d+ of 1008 \(damaged or truncated file\)",
                        found[0]), found


def test_whole_videos_give_no_warning(tmp_path):
    """Every real video here, the sample and a synthetic FFV1 set read to their end without a
    word (their reported frame counts are what they decode)."""
    make_set([shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4")], tmp_path,
             Recipe(count=1, frames=40, size=32, still=True, sway=2.0), progress=False)
    videos = [*sorted(SHARED_DATA.glob("*.mp4")), SAMPLE_VIDEO, *sorted((tmp_path / "videos").glob("*.avi"))]
    assert len(videos) >= 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for video in videos:
            assert sum(1 for _ in open_source(video)) > 0


def test_the_tolerance_leaves_estimated_counts_alone():
    assert not cut_short(100, 0)  # no count reported
    assert not cut_short(1005, 1008) and not cut_short(98, 100) and not cut_short(990, 1000)
    assert not cut_short(110, 100)  # more than reported: an estimate, not damage
    assert cut_short(515, 1008) and cut_short(90, 100) and cut_short(10, 15)


def test_a_reader_that_stops_early_gets_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for index, _ in enumerate(open_source(shared_video("pyfeat_single_face.mp4"))):
            if index == 3:
                break


@pytest.mark.parametrize("name", ["frame_0001.png", "FRAME.JPG"])
def test_one_image_is_not_a_one_frame_video(tmp_path, name):
    """OpenCV opens an image as a one-frame video at a made-up 25 fps: realtime.cam spotted it
    and the demo annotated it, exit 0 and no word that it was not a video."""
    import cv2
    import numpy as np

    image = tmp_path / name
    cv2.imwrite(str(image.with_suffix(".png")), np.zeros((32, 32, 3), np.uint8))
    image.with_suffix(".png").rename(image)
    with pytest.raises(ValueError) as refused:
        open_source(image)
    assert str(refused.value) == (f"{image}: an image, not a video; give the folder of numbered frames it belongs to "
                                  "(with its frame rate)")
    cam = subprocess.run([sys.executable, "-m", "realtime.cam", "--source", str(image), "--headless"],
                         capture_output=True, text=True, timeout=120)
    assert cam.returncode == 2 and cam.stderr.strip().splitlines() == [f"error: {image}: an image, not a video; give "
                                                                       "the folder of numbered frames it belongs to "
                                                                       "(with its frame rate)"]


def test_progress_bars_know_how_many_frames_to_expect(tmp_path):
    """estimated_count: a folder's exact count, a file's header count (OpenCV's estimate)."""
    import cv2

    assert open_source(SAMPLE_VIDEO).estimated_count() == 72
    for i, frame in enumerate(open_source(SAMPLE_VIDEO)):
        if i < 5:
            cv2.imwrite(str(tmp_path / f"img{i}.png"), frame)
    assert open_source(tmp_path, fps=30).estimated_count() == 5


def test_a_variable_frame_rate_file_is_said_once_and_not_taken_for_a_damaged_one(tmp_path):
    """The bundled sample's first 36 frames at 30 fps, the other 36 at 10 fps (a phone's
    variable frame rate): every frame is read, frame numbers as they are; one warning says
    the times are frame / fps, and the header's count (duration x 30 = 142) is no damage.
    A constant-rate file says nothing."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg program to write a variable-frame-rate file")
    uneven = tmp_path / "uneven.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-vf",
                    "setpts='if(lt(N,36),N/30/TB,(36/30+(N-36)/10)/TB)'", "-fps_mode", "vfr", "-c:v", "libx264",
                    str(uneven)], check=True)

    def warnings_reading(path: Path) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert sum(1 for _ in open_source(path)) == 72
        return [str(w.message) for w in caught]

    said = warnings_reading(uneven)
    assert len(said) == 1 and said[0].startswith(f"{uneven}: its own frame times drift from frame / 30 fps "
                                                 "(frame 38 is at 1.40 s, not 1.27 s: a variable frame rate, or a "
                                                 "wrong rate in its header)"), said
    assert "times are taken as frame / 30 fps" in said[0] and "-fps_mode cfr -r 30" in said[0]
    assert warnings_reading(SAMPLE_VIDEO) == []
    # A rate given by the user is not the one the file's times were written at: nothing drifts.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sum(1 for _ in open_source(SAMPLE_VIDEO, fps=15)) == 72
    assert [str(w.message) for w in caught] == []
    # A raw stream has no frame times (OpenCV gives 0 for each): nothing to judge, nothing said.
    raw = tmp_path / "raw.h264"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-c:v", "libx264", "-f", "h264", str(raw)],
                   check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sum(1 for _ in open_source(raw)) == 72
    assert not [w for w in caught if "own frame times drift" in str(w.message)], [str(w.message) for w in caught]


def test_a_folder_copied_from_a_mac_reads_its_frames_not_their_appledouble_files(tmp_path):
    """A zip or an exFAT disk from a Mac puts a hidden ``._00001.png`` beside each frame: it is
    no frame (it was "frame number 1 appears twice"). WebP frames are frames."""
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        assert cv2.imwrite(str(tmp_path / f"{i:05d}.webp"), image)
        (tmp_path / f"._{i:05d}.webp").write_bytes(b"\x00\x05\x16\x07AppleDouble metadata")
    source = open_source(tmp_path, fps=30)
    assert [p.name for p in source.files] == ["00001.webp", "00002.webp", "00003.webp"]


def test_an_empty_file_is_called_empty(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"clip\.mp4: an empty file \(0 bytes\)$"):
        open_source(tmp_path / "clip.mp4")


def test_a_file_with_non_square_pixels_is_said_once_and_the_given_fix_works(tmp_path):
    """A 4:3 sample aspect ratio (an anamorphic recording): OpenCV gives the stored pixels, so
    the face is read squeezed. Said before the first frame; the ffmpeg line it gives squares them."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg program to write an anamorphic file")
    squeezed = tmp_path / "squeezed.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-vf", "scale=480:360,setsar=4/3",
                    "-frames:v", "10", str(squeezed)], check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_source(squeezed)
        frames = list(source)
    said = [str(w.message) for w in caught]
    assert len(frames) == 10 and frames[0].shape == (360, 480, 3)  # (the stored pixels)
    assert said == [f"{squeezed}: its pixels are not square (sample aspect ratio 4:3): faces are read squeezed "
                    "sideways; make them square first: ffmpeg -i IN -vf scale=iw*sar:ih,setsar=1 OUT.mp4"]
    assert source.notes == [said[0].split(": ", 1)[1]]
    fix = said[0].split("first: ")[1].replace("IN", str(squeezed)).replace("OUT.mp4", str(tmp_path / "square.mp4"))
    subprocess.run(["ffmpeg", "-v", "error", "-y", *fix.split()[1:]], check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert next(iter(open_source(tmp_path / "square.mp4"))).shape == (360, 640, 3)
    assert [str(w.message) for w in caught] == []
