"""Video sources: a video file or a folder of numbered image frames, as BGR uint8 frames.

The data sets ship their videos as image folders (CAS(ME)^2 ``rawpic/s15/15_0401.../img001.jpg``,
CAS(ME)^3 ``spNO.1/a/color/1.jpg``, SAMM ``SAMM_longvideos/006_1/006_1_0001.jpg``), users
bring video files; :func:`open_source` gives both the same face: ``fps`` and an iterable of
frames. Frame ``i`` of a folder is its ``i``-th image in the order of the number in the file
name (the last run of digits: ``img12.jpg`` -> 12, ``006_1_0001.jpg`` -> 1), so frame
indices are the 0-based source indices of the annotation table (docs/design.md). A folder has no
frame rate of its own: pass the data set's (``fgsl.data.datasets.DATASET_FPS``).

Problems are one :class:`VideoError` naming the folder or file and the
reason: gaps or duplicates in the numbering, no images, a file without a number at open;
an unreadable image or one of another size when iteration reaches it (reading 8,000 SAMM
frames up front just to check them would double the cost of every pass). A video file whose
decoding stops well before the frame count its container reports gives a warning
(:func:`cut_short`) when iteration ends there.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# FFmpeg inside OpenCV prints its own lines ("moov atom not found") for a broken file before
# OpenCV reports failure; we report the failure in one line of our own, so keep FFmpeg quiet
# (AV_LOG_QUIET). Read by OpenCV when it first opens a video; a user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from fgsl.config import MAX_FPS, MIN_FPS, is_positive_number  # noqa: E402


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_level = 0


@contextmanager
def opencv_quiet() -> Iterator[None]:
    """Silence OpenCV's own logging (its backends each print why they could not open a device).

    The level is process-wide and cameras reopen on capture threads, so nested and concurrent
    uses share one saved level, restored when the last one leaves."""
    global _quiet_depth, _quiet_saved_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cv2.utils.logging.setLogLevel(_quiet_saved_level)



class VideoError(ValueError):
    """A video that cannot be read (the message names the file and the reason)."""


IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class FrameSource:
    """A video file (``files`` empty) or a frame folder (``files`` in frame order).

    Iterating yields ``[H, W, 3]`` BGR uint8 frames and may be repeated (each pass reopens).
    ``count`` is the number of frames of a folder; ``None`` for a video file, whose header
    count is only an estimate in OpenCV.
    """

    path: Path
    fps: float
    files: tuple[Path, ...] = ()
    #: What reading the file found and warned about (a variable frame rate, a cut-off end), as
    #: reasons without the file's name: for a caller that shows them elsewhere than the log
    #: (the demo's summary names the upload as its user named it).
    notes: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def count(self) -> int | None:
        return len(self.files) if self.files else None

    def estimated_count(self) -> int | None:
        """Frames to expect, for a progress bar: a folder's count, a file's header count (an
        estimate in OpenCV; ``None`` when the file reports none)."""
        if self.files:
            return len(self.files)
        cap = _open_capture(self.path)
        try:
            return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        finally:
            cap.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._folder_frames() if self.files else self._video_frames()

    def _folder_frames(self) -> Iterator[np.ndarray]:
        first: tuple[Path, tuple[int, ...]] | None = None
        for file in self.files:
            image = _read_image(file)
            if first is None:
                first = (file, image.shape)
            elif image.shape != first[1]:
                raise VideoError(
                    f"{file}: {_size(image.shape)} image, but the folder's first frame "
                    f"{first[0].name} is {_size(first[1])}: all frames must have one size"
                )
            yield image

    def _video_frames(self) -> Iterator[np.ndarray]:
        cap = _open_capture(self.path)
        read = 0
        # Judged against the file's own rate (a rate given by the user, --fps, is not the one its
        # frame times were written at); the reason names the rate the times are taken at.
        drift = UnevenFrames(cap.get(cv2.CAP_PROP_FPS), self.fps)
        self.notes.clear()
        squeezed = non_square_reason(cap.get(cv2.CAP_PROP_SAR_NUM), cap.get(cv2.CAP_PROP_SAR_DEN))
        if squeezed is not None:
            self._note(squeezed)
        try:
            reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                uneven = drift.check(read, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
                if uneven is not None:
                    self._note(uneven)
                read += 1
                yield frame
        finally:
            cap.release()
        # (Not reached when the reader stops early itself. An uneven file's header count is its
        # duration times the nominal rate, not a count of frames: no sign of damage.)
        if cut_short(read, reported) and not drift.said:
            self._note(cut_short_reason(read, reported))

    def _note(self, reason: str) -> None:
        """Keep ``reason`` in :attr:`notes` and warn with it, naming the file."""
        self.notes.append(reason)
        warnings.warn(f"{self.path}: {reason}", stacklevel=3)


class UnevenFrames:
    """Finds, once, a video whose own frame times (its container's timestamps) drift from
    ``frame / fps`` by more than :data:`UNEVEN_DRIFT_S`: a variable-frame-rate file (phone
    recordings often are), or one whose header gives another rate than its frames have (OpenCV
    reads an animated GIF of 15 fps as 16.7). Every reader here numbers frames and times them
    at the nominal rate (frame / fps), as the model's windows and the MEGC annotations count
    frames; in such a file those times, and how long a movement lasts, are off (frame numbers
    stay right).

    Only times that rise from frame to frame are trusted: a raw stream (``.h264``) has none,
    and OpenCV gives 0 for every frame; once a time fails to rise, nothing more is checked."""

    def __init__(self, own_fps: float, used_fps: float) -> None:
        self.own_fps, self.fps = own_fps, used_fps
        self.start: float | None = None  # the first frame's own time (a stream may not start at 0)
        self.last: float | None = None
        self.said = False
        self.trusted = is_positive_number(own_fps)  # (a file reporting no rate has nothing to drift from)

    def check(self, index: int, seconds: float) -> str | None:
        """The reason to give (once), when frame ``index`` at ``seconds`` shows the drift."""
        if self.said or not self.trusted:
            return None
        if not math.isfinite(seconds) or (self.last is not None and seconds <= self.last):
            self.trusted = False
            return None
        if self.start is None:
            self.start = seconds
        self.last = seconds
        own, nominal = seconds - self.start, index / self.own_fps
        if abs(own - nominal) <= UNEVEN_DRIFT_S:
            return None
        self.said = True
        return (f"its own frame times drift from frame / {self.own_fps:g} fps (frame {index} is at {own:.2f} s, not "
                f"{nominal:.2f} s: a variable frame rate, or a wrong rate in its header); times are taken as "
                f"frame / {self.fps:g} fps, so times and durations are off "
                f"(frame numbers are right); for true times, make it constant first: ffmpeg -i IN -fps_mode cfr "
                f"-r {self.fps:g} OUT.mp4")


def non_square_reason(num: float, den: float) -> str | None:
    """Why a file whose pixels are not square (its sample aspect ratio ``num:den``, 0 or 1:1
    for square or unknown) is read wrong: OpenCV gives the stored pixels, so a face recorded
    anamorphic (DV, some broadcast and phone files) is seen squeezed or stretched by the face
    tracker and the model, and an annotated video saved from it plays distorted."""
    if not (num > 0 and den > 0) or abs(num / den - 1) < 0.01:
        return None
    return (f"its pixels are not square (sample aspect ratio {num:g}:{den:g}): faces are read "
            f"{'stretched' if num < den else 'squeezed'} sideways; make them square first: "
            "ffmpeg -i IN -vf scale=iw*sar:ih,setsar=1 OUT.mp4")


#: How far a video's own frame times may drift from frame / fps before :class:`UnevenFrames`
#: warns: a tenth of a second, a fifth of the longest micro-expression (events' times off by
#: more are wrong for this work). A constant-rate file drifts by nothing: measured 2026-11-28 on
#: the shared videos, samples/, synthetic sets and 40 re-encodings of them (webm, mkv, mov, avi,
#: 10-bit, 4K): 0.000 s. Half a second (before) let a file with 12 dropped frames, whose
#: events came out 0.32 s early, pass unsaid.
UNEVEN_DRIFT_S = 0.1


#: How far decoding may fall short of a video's reported frame count before a warning: more
#: than this fraction and more than :data:`SHORT_FRAMES` frames. The header's count is an
#: estimate in some containers (from duration x rate), so a few frames either way are not
#: damage; a cut-off download or copy loses far more. Measured 2026-11-27: the shared
#: videos, samples/ and synthetic FFV1 sets decode exactly their reported count (72, 216,
#: 352, 1,008, 64, 40); the first half of a faststart copy of the 1,008-frame video decodes 515.
SHORT_FRACTION = 0.05
SHORT_FRAMES = 3

#: How long ``ffprobe`` may take to say why a file cannot be opened (it reads headers only:
#: milliseconds on a local file; a hung network share must not hang the error).
PROBE_TIMEOUT_S = 10.0


def cut_short(read: int, reported: int) -> bool:
    """Whether decoding ``read`` frames of a file whose container reports ``reported`` (0 or
    less: unknown) means the file is damaged or truncated.

    Why: OpenCV ends a damaged stream like a finished one, so a truncated file would be read
    silently as a shorter video (its events past the cut missing from training or inference)."""
    return reported > 0 and reported - read > max(SHORT_FRAMES, SHORT_FRACTION * reported)


def cut_short_reason(read: int, reported: int) -> str:
    """What is said of a file :func:`cut_short` judges damaged (after its name)."""
    return f"decoding stopped at frame {read} of {reported} (damaged or truncated file)"


def open_source(path: str | Path, fps: float | None = None) -> FrameSource:
    """Open a video file or a folder of numbered frames (``fps`` required for a folder).

    For a video file, ``fps`` overrides the rate the container reports (for files that
    report none or a wrong one); otherwise the container's rate is used.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such video file or frame folder")
    if fps is not None and not is_positive_number(fps):
        raise VideoError(f"{path}: fps must be a positive number, got {fps}")
    if path.is_dir():
        return _open_folder(path, fps)
    if not path.is_file():
        # OpenCV waits forever on a named pipe no one writes to, and reads a device as it comes;
        # cameras are opened as cameras (realtime.capture), never as files.
        raise VideoError(f"{path}: not a regular file or a folder (a named pipe, device or socket); give a video "
                         "file or a folder of numbered frames")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        # OpenCV opens one image as a one-frame "video" at a made-up 25 fps: a frame folder's
        # file given by mistake would be spotted as a video of one frame, without a word.
        raise VideoError(f"{path}: an image, not a video; give the folder of numbered frames it belongs to "
                         "(with its frame rate)")
    return _open_video(path, fps)


def _open_folder(path: Path, fps: float | None) -> FrameSource:
    numbered = _numbered_images(path)
    numbers = sorted(numbered)
    for before, after in zip(numbers, numbers[1:]):
        if after != before + 1:
            raise VideoError(
                f"{path}: frame {before + 1} is missing (nothing numbered {before + 1} between "
                f"{numbered[before].name} and {numbered[after].name}); frames must be numbered without gaps"
            )
    if fps is None:
        raise VideoError(
            f"{path}: a folder of frames has no frame rate of its own; pass it with --fps (in Python: "
            "fps=; each data set's is in fgsl.data.datasets.DATASET_FPS)"
        )
    return FrameSource(path, float(fps), tuple(numbered[n] for n in numbers))


def media_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes`` (any case), sorted. Hidden files are
    never frames or videos: a folder copied from a Mac through a zip or an exFAT disk has a
    ``._00001.png`` or ``._clip.mp4`` (AppleDouble metadata) beside each file, which OpenCV
    cannot read."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in suffixes and not p.name.startswith(".") and p.is_file())


def _numbered_images(path: Path) -> dict[int, Path]:
    """{frame number: file} for the images of ``path``; clear errors for anything ambiguous."""
    images = media_files(path, IMAGE_SUFFIXES)
    if not images:
        subfolders = sorted(p.name for p in path.iterdir() if p.is_dir())
        hint = f"; it has subfolders ({', '.join(subfolders[:5])}): point at the one with the frames"
        kinds = ", ".join(IMAGE_SUFFIXES)
        raise VideoError(f"{path}: no image frames ({kinds}) in this folder{hint if subfolders else ''}")
    numbered: dict[int, Path] = {}
    for image in sorted(images):
        match = _LAST_NUMBER.search(image.stem)
        if match is None:
            raise VideoError(f"{image}: no frame number in the file name (expected e.g. img12.jpg)")
        number = int(match.group(1))
        if number in numbered:
            twice = f"{numbered[number].name}, {image.name}"
            raise VideoError(f"{path}: frame number {number} appears twice ({twice})")
        numbered[number] = image
    return numbered


def _open_video(path: Path, fps: float | None) -> FrameSource:
    cap = _open_capture(path)
    try:
        reported = cap.get(cv2.CAP_PROP_FPS)
        ok, _ = cap.read()
    finally:
        cap.release()
    if not ok:
        raise VideoError(f"{path}: no decodable frames (corrupt or not a video)")
    if fps is None:
        if not is_positive_number(reported):
            raise VideoError(f"{path}: the file reports no frame rate: pass fps")
        if not MIN_FPS <= reported <= MAX_FPS:  # (a wrong header: its time base, say, 90000)
            raise VideoError(f"{path}: the file reports {reported:g} frames per second, outside {MIN_FPS:g}-"
                             f"{MAX_FPS:g} (too slow to show a micro-expression, or a wrong header): give its real "
                             "rate with --fps where the command has it, or re-encode the video at that rate")
        fps = reported
    return FrameSource(path, float(fps))


#: Why a file name cannot go to OpenCV's video reader or writer (:func:`is_utf8_name`).
NOT_UTF8 = "the file name is not valid UTF-8, which OpenCV's video reader and writer cannot take (rename the file)"


def is_utf8_name(path: str | Path) -> bool:
    """Whether OpenCV's ``VideoCapture`` and ``VideoWriter`` can take ``path``. Why: they take
    the name as UTF-8, and a name that is not (bytes a Linux file name may hold, which Python
    keeps as surrogates) crashed the process inside OpenCV with a segmentation fault
    (opencv-python 4.x here, 2026-11-28), for reading and for writing alike."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def opencv_name(path: str | Path) -> str:
    """``path`` as OpenCV's video reader and writer take it; a name they cannot take is a
    :class:`VideoError` (:func:`is_utf8_name`)."""
    if not is_utf8_name(path):
        raise VideoError(f"{path}: {NOT_UTF8}")
    return str(path)


def _open_capture(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(opencv_name(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: {unopenable_reason(path)}")
    return cap


def unopenable_reason(path: Path) -> str:
    """Why OpenCV could not open ``path`` as a video, as far as can be told: an empty file, a
    file with no video stream (audio only), an MP4 cut off before its index was written (a
    recording or download that stopped), else what ``ffprobe`` (installed with ffmpeg by the
    set-up) says. OpenCV itself only says no, and these need different remedies."""
    if path.is_file() and path.stat().st_size == 0:  # (an upload or a copy that never got its bytes)
        return "an empty file (0 bytes)"
    plain = "OpenCV cannot open this file as a video"
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or not path.is_file():
        return plain
    try:
        probe = subprocess.run([ffprobe, "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
                               capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return plain
    kinds = sorted({line.strip() for line in probe.stdout.splitlines() if line.strip()})
    if probe.returncode == 0 and kinds and "video" not in kinds:
        return f"it has no video stream (only {', '.join(kinds)})"
    if "moov atom not found" in probe.stderr:
        with path.open("rb") as file:
            if file.read(12)[4:8] == b"ftyp":
                return ("an MP4 without its index (moov atom): a recording or download cut off before it finished; "
                        "the frames cannot be found without it")
    said = [line.split(": ", 1)[-1] for line in probe.stderr.splitlines() if line.strip()]
    return f"{plain} (ffprobe: {said[-1]})" if said else plain


def _read_image(file: Path) -> np.ndarray:
    """One frame as BGR uint8 (grey and 16-bit images are converted by OpenCV)."""
    try:
        data = np.fromfile(file, dtype=np.uint8)  # not cv2.imread: it returns None for every failure
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error) as exc:
        raise VideoError(f"{file}: cannot read this image ({exc})") from None
    if image is None:
        raise VideoError(f"{file}: cannot read this image (empty, corrupt or not an image)")
    return image


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"
