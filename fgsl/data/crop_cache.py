"""Aligned face crops kept on disk, so that each video is aligned with MediaPipe once.

Why: aligning is the slow part of reading a video for weights trained on aligned crops (12 ms
a frame against 1.3 ms for centre crops on 2 cores, docs/training.md: about 22 minutes per
hour of 30 fps video), and the same videos are read again and again: by ``--resume``, by each
fold of a leave-one-subject-out evaluation, by ``fgsl.tune`` and ``fgsl.infer`` after
training, and by every ``torchrun`` rank (``fgsl.train`` lets rank 0 read first, then the
others read its entries). Reading an entry back takes 33 ms for the 1,008-frame expressions
video at 112 px, against 12.8 s aligning it (2 cores, 2026-11-28). Centre crops are not
cached: decoding them takes 1.5 s there, and an entry would take as much disk as the crops.

Key: everything the crops depend on.

- The video: its resolved path (a symbolic link is the file it points to), and the size and
  modification time (ns) of the file or of each frame of a folder. A video edited,
  re-encoded or replaced in place misses the cache.
- The reading: the crop size, the tracker's crop size, the frame rate used (the file's own or
  the one given) and the model's rate (which frames are aligned,
  :func:`fgsl.data.aligned.model_frames`; any rate not below the source's is every frame).
- The aligner: the SHA-256 of the source of :data:`CODE` (the tracker, the aligned reader,
  frame picking and decoding: a change to how crops are made misses the cache, with no
  version number to forget), the face model's hash, and the MediaPipe and OpenCV versions.

Entry: one safetensors file per key, ``<video name>-<16 hex digits of the key>.fgsl-crops``
in :func:`default_dir` (its own suffix: ``--clear`` never takes a weights file for one): ``crops`` ``[K, S, S, 3]`` uint8, the distinct aligned frames (a
frame the model is not shown, or without the face, repeats another: it is stored once), and
``index`` ``[N]`` int32, which crop each of the video's N frames is. The metadata holds the
key (checked on load), a CRC-32 of both arrays (safetensors checks only the header and the
length: flipped bits on disk would be served; the check costs 16 ms for 62 MB on 2 cores) and
the reading's warnings (a damaged file's too), said again on each use, so a cached video is
not quieter than a fresh one. Disk: the crops a reader holds in
memory anyway (112 px: 37.6 kB a model frame, about 4.1 GB per hour of 30 fps video). A
folder the cache makes is private (0700): its crops are faces, perhaps of a licensed data set
(a folder given that exists keeps its own permissions).
``FGSL_CROP_CACHE=off`` reads without the cache.

Writes are atomic (:func:`fgsl.files.atomic_output`): a reader sees a whole entry or none.
An entry that cannot be read back (cut short, not ours, another key, unreadable) is aligned
again and replaced. A folder that cannot be written gives one warning per process, and
reading goes on without the cache. Entries are never removed on their own: ``python -m fgsl.data.crop_cache``
shows them (size, last use) and ``--clear`` or ``--older-than DAYS`` deletes them (each is
made again on its next use), as ``python -m engines.cache`` does for engines
(:mod:`fgsl.cache_files`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import warnings
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# OpenCV and numpy take a moment to import: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import cv2
    import numpy as np

    from fgsl.cache_files import cache_command, touch
    from fgsl.data.frames import FrameSource
    from fgsl.files import atomic_output

__all__ = ["CachedCrops", "CropEntry", "default_dir", "enabled", "entry_for", "reading_key"]

#: Entries are safetensors files, named apart from any other (a weights folder's
#: ``model.safetensors`` given as ``--dir`` must never pass for an entry and be pruned).
SUFFIX = ".fgsl-crops"

#: The folders whose write failure was already said, so a data set of a thousand videos gives
#: one warning, not a thousand.
_unwritable: set[Path] = set()


#: ``FGSL_CROP_CACHE=off``: read without the cache (every aligned reading aligns).
OFF = "off"

#: Bytes of a video's name kept in its entry's name: with the key's 16 hex digits and the
#: suffix, the entry stays within the 255 bytes a file name may have, whatever the video's.
NAME_BYTES = 80


def default_dir() -> Path:
    """``$FGSL_CROP_CACHE``, else ``$XDG_CACHE_HOME/fgsl/crops``, else ``~/.cache/fgsl/crops``
    (beside the engine cache, ``engines.cache.default_dir``)."""
    if os.environ.get("FGSL_CROP_CACHE") not in (None, "") and enabled():
        return Path(os.environ["FGSL_CROP_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fgsl" / "crops"


def enabled() -> bool:
    """Whether aligned readings use the cache: all but with ``FGSL_CROP_CACHE=off``."""
    return os.environ.get("FGSL_CROP_CACHE", "").strip().lower() != OFF  # (OFF or Off too: no folder "OFF")


@dataclass(frozen=True)
class CachedCrops:
    """A video read as aligned crops: the distinct ``crops`` and, for each frame of the video,
    the ``index`` of its crop (``crops[index]`` is the video); ``said``: the reading's warnings,
    without the video's name (a later reading may name it by another path)."""

    crops: np.ndarray
    index: np.ndarray
    said: tuple[str, ...] = ()


#: The code that decides aligned crops: the tracker, the aligned reader, which frames a model
#: is shown, and decoding.
CODE = ("realtime/face.py", "realtime/cuts.py", "fgsl/data/aligned.py", "fgsl/data/video.py", "fgsl/data/frames.py")


@functools.cache
def _source_digest() -> str:
    """SHA-256 of :data:`CODE` (see the module docstring); once per process, not per video."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for name in CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


@functools.cache
def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def reading_key(source: FrameSource, size: int, model_fps: float | None) -> dict[str, Any]:
    """What aligned crops of ``source`` at ``size`` pixels for a model at ``model_fps`` depend
    on (the module docstring). A video named through a symbolic link is the file it points to;
    a model at or above the source's rate is shown every frame, whatever its rate."""
    from fgsl.data.aligned import tracker_crop_size
    from realtime.face import MODEL_SHA256

    files = [f.resolve() for f in source.files or (source.path,)]
    stats = [os.stat(f) for f in files]
    shown = None if model_fps is None or model_fps >= source.fps else float(model_fps)
    return {
        "video": str(source.path.resolve()),
        "files": hashlib.sha256(json.dumps([[f.name, s.st_size, s.st_mtime_ns] for f, s in zip(files, stats)])
                                .encode()).hexdigest(),  # (a frame folder's thousands of files, in 64 digits)
        "size": size,
        "tracker_crop": tracker_crop_size(size),
        "fps": float(source.fps),
        "model_fps": shown,
        "code": _source_digest(),
        "face_model": MODEL_SHA256,
        "mediapipe": _version("mediapipe"),
        "opencv": cv2.__version__,
    }


def key_text(key: dict[str, Any]) -> str:
    """``key`` as sorted, compact JSON: what an entry records and its name hashes."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def checksum(crops: np.ndarray, index: np.ndarray) -> str:
    """CRC-32 of an entry's two arrays as stored (uint8 crops, int32 index), in hex."""
    return f"{zlib.crc32(index.astype(np.int32), zlib.crc32(np.ascontiguousarray(crops))):08x}"


@dataclass(frozen=True)
class CropEntry:
    """The cache file of one key: :meth:`load` it, or :meth:`store` what was read."""

    path: Path
    key: dict[str, Any]

    def load(self) -> CachedCrops | None:
        """The entry's crops, or ``None`` when there is none or it cannot be used (it is then
        aligned again and replaced; a folder that cannot be read is said by :meth:`store`)."""
        from safetensors import SafetensorError, safe_open

        try:
            if not self.path.is_file():
                return None
            with safe_open(str(self.path), framework="numpy") as f:
                info = f.metadata() or {}
                if info.get("key") != key_text(self.key) or set(f.keys()) != {"crops", "index"}:
                    return None  # another key (a hash collision) or not ours
                crops, index = f.get_tensor("crops"), f.get_tensor("index")
            said = json.loads(info.get("said", "[]"))
        except (SafetensorError, OSError, ValueError):  # cut short, damaged, or not readable: made again
            return None
        if info.get("crc32") != checksum(crops, index):
            return None  # damaged on disk (or written before entries had a checksum)
        size = self.key["size"]
        if (not isinstance(said, list) or not all(isinstance(m, str) for m in said) or crops.dtype != np.uint8
                or crops.shape[1:] != (size, size, 3) or index.ndim != 1 or not len(index) or index.min() < 0
                or index.max() >= len(crops)):
            return None
        touch(self.path)  # used now: `--older-than` keeps it
        return CachedCrops(crops, index.astype(np.intp), tuple(said))

    def store(self, read: CachedCrops) -> None:
        """Write ``read`` as this entry (atomically; safetensors' ``save_file`` writes the
        arrays to the file, without the whole file built in memory first as ``save`` does, in
        the installed 0.8). A folder the cache makes is private (0700): its crops are faces,
        perhaps of a licensed data set. A folder that cannot be written (read-only, full, a
        quota: safetensors reports the last two as its own error) is said once, and the
        reading goes on without the cache."""
        from safetensors import SafetensorError
        from safetensors.numpy import save_file

        folder = self.path.parent
        crops, index = np.ascontiguousarray(read.crops), read.index.astype(np.int32)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with atomic_output(self.path) as tmp:
                save_file({"crops": crops, "index": index}, str(tmp),
                          metadata={"key": key_text(self.key), "crc32": checksum(crops, index),
                                    "said": json.dumps(list(read.said))})
        except (OSError, SafetensorError) as exc:
            if folder not in _unwritable:
                _unwritable.add(folder)
                reason = getattr(exc, "strerror", None) or str(exc)
                warnings.warn(f"aligned-crop cache {folder}: cannot write ({reason}); videos are aligned again on "
                              f"each reading (set FGSL_CROP_CACHE to a writable folder, or to {OFF})", stacklevel=3)


def entry_for(source: FrameSource, size: int, model_fps: float | None, root: Path | None = None) -> CropEntry:
    """The cache entry of ``source`` read as ``size``-pixel aligned crops for a model at
    ``model_fps``, in ``root`` (default :func:`default_dir`)."""
    key = reading_key(source, size, model_fps)
    digest = hashlib.sha256(key_text(key).encode()).hexdigest()[:16]
    name = os.fsencode(Path(key["video"]).name)[:NAME_BYTES].decode(errors="ignore")  # (any bytes a name holds)
    return CropEntry((root or default_dir()) / f"{name}-{digest}{SUFFIX}", key)


def main(argv: list[str] | None = None) -> int:
    if not enabled():
        print(f"(FGSL_CROP_CACHE={OFF}: readings do not use the cache; this is where it would be)")
    return cache_command(argv, prog="python -m fgsl.data.crop_cache", noun="aligned-crop cache", suffix=SUFFIX,
                         default_dir=default_dir,
                         dir_help="$FGSL_CROP_CACHE, else $XDG_CACHE_HOME/fgsl/crops, else ~/.cache/fgsl/crops",
                         filled_by="as fgsl.train, fgsl.infer and fgsl.tune read videos as aligned face crops")


if __name__ == "__main__":
    with startup_imports(__name__):  # the command's plumbing (fgsl.cli) imports torch: its first second or two
        importlib.import_module("fgsl.cli")
    quiet_exit(main())
