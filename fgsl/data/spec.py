"""``--data SPEC``: which videos and annotations a training run reads, and the split.

Specs
-----
``synthetic``, ``synthetic=DIR`` or ``synthetic=VIDEO``
    Real face videos (those in ``DIR``, or the one ``VIDEO``; default: ``$FGSL_FACE_VIDEOS``,
    else ``../shared/data`` beside the checkout, else the bundled ``samples/``) with injected micro-expressions
    (:mod:`fgsl.data.synthetic`). Training videos come from the first 60 % of each source,
    validation videos from the next 15 %, held-out videos from the last 25 %, so the split
    needs no ``--split``.
``table=ANNOTATIONS.csv``, ``casme2=FILE``, ``casme3=FILE``, ``samm=FILE``
    An annotation file in our table format or a data set's own layout, with the videos
    under ``--video-root`` (looked up as ``ROOT/subject/video``, ``ROOT/video``, each either a
    folder of numbered frames or a file with any extension, also by a name that continues the
    video's, as in CAS(ME)^2's ``rawpic``; see :func:`find_video`). The split is by subject:
    ``--split loso:K`` holds out the K-th subject (sorted), ``--split subjects:A,B`` holds
    out the named ones. Validation subjects come from the remaining ones the same way
    (``--val loso:K`` / ``subjects:A,B``; ``auto``: the first remaining subject when at
    least two remain; ``none``: no validation).

Frames are loaded once, as RGB crops at the model's input size, resampled to the model's
fps (:func:`fgsl.data.video.resample_indices`); annotations move to model frames by the same
rule (:func:`fgsl.data.video.to_model_frame`: nearest frame, ties half up).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fgsl.config import FGSLConfig
from fgsl.data.frames import media_files
from fgsl.data.table import Annotation, AnnotationError, read_table
from fgsl.data.video import read_crops, resample_indices, to_model_frame
from fgsl.files import file_identity

ROOT = Path(__file__).resolve().parents[2]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class DataSpecError(ValueError):
    """A ``--data``/``--split`` that cannot be used (the message says why)."""


@dataclass
class VideoItem:
    """One video ready for training: frames at model fps and size, events in model frames."""

    subject: str
    name: str
    path: Path
    source_fps: float
    source_frames: int
    frames: np.ndarray  # [F, S, S, 3] RGB uint8
    events: list[tuple[int, int, int, int]] = field(default_factory=list)  # onset, apex, offset, class


@dataclass
class TrainData:
    """Training videos, validation videos (choose the epoch and the score threshold) and
    held-out test videos (scored once, at the end), each with its ground truth."""

    train: list[VideoItem]
    held_out: list[VideoItem]
    held_out_truth: list[Annotation]
    description: str
    val: list[VideoItem] = field(default_factory=list)
    val_truth: list[Annotation] = field(default_factory=list)


def default_face_videos() -> Path:
    """Face videos for ``--data synthetic`` without ``=``: ``$FGSL_FACE_VIDEOS`` (an error if
    it names no folder of .mp4 videos), else ``../shared/data`` beside the checkout, else the
    bundled sample, with a warning: one 2.4-s face is a smoke test, not a training set."""
    chosen = os.environ.get("FGSL_FACE_VIDEOS")
    if chosen:
        if not _has_videos(Path(chosen)):
            raise DataSpecError(f"$FGSL_FACE_VIDEOS={chosen}: not a folder of face videos")
        return Path(chosen)
    if _has_videos(ROOT.parent / "shared" / "data"):
        return ROOT.parent / "shared" / "data"
    if _has_videos(ROOT / "samples"):
        warnings.warn(f"no $FGSL_FACE_VIDEOS and no {ROOT.parent / 'shared' / 'data'}: synthetic data from the bundled "
                      "sample only (one face, 2.4 s); pass --data synthetic=DIR for a real run")
        return ROOT / "samples"
    raise DataSpecError("no face videos for synthetic data: pass --data synthetic=DIR")


def video_files(folder: Path) -> list[Path]:
    """The video files of ``folder``, sorted, hidden ones left out (:func:`fgsl.data.frames.media_files`)."""
    return media_files(folder, VIDEO_SUFFIXES)


def _has_videos(folder: Path) -> bool:
    return folder.is_dir() and bool(video_files(folder))


def parse(spec: str) -> tuple[str, str | None]:
    kind, equals, value = spec.partition("=")
    kinds = ("synthetic", "table", "casme2", "casme3", "samm")
    if kind not in kinds:
        raise DataSpecError(f"--data {spec!r}: kind must be one of {', '.join(kinds)} (e.g. casme2=annotations.xlsx)")
    if equals and not value:  # `synthetic=$VIDEOS` with VIDEOS unset trained on the shared videos
        raise DataSpecError(f"--data {spec!r}: nothing after '=' (an unset shell variable?)")
    if kind != "synthetic" and not value:
        raise DataSpecError(f"--data {kind} needs a file: --data {kind}=ANNOTATIONS")
    return kind, value or None


def load_item(cfg: FGSLConfig, subject: str, name: str, path: Path, rows: list[Annotation],
              fps: float | None = None, table: Path | None = None, aligned: bool = False,
              progress: bool = False) -> VideoItem:
    """Read a video (``fps``: the data set's rate, needed for frame folders and overriding a
    video file's header, as ``fgsl.infer --fps`` does; ``aligned``: MediaPipe-aligned face
    crops instead of centre crops, :func:`fgsl.data.video.read_crops`) and move its
    annotations (from ``table``, named in errors) to model frames.

    A row that ends past the video's last frame is refused: its event never fits in a window,
    and every window that would cut it is dropped, so it silently removes training data."""
    video = read_crops(path, cfg.image_size, fps, aligned=aligned, progress=progress, model_fps=cfg.fps)
    index = resample_indices(video.count, video.fps, cfg.fps)
    events = []
    for r in rows:
        if r.emotion not in cfg.classes:
            raise AnnotationError(f"{subject}/{name}: emotion {r.emotion!r} is not a class of this model")
        if r.offset >= video.count:
            raise AnnotationError(f"{table or 'annotations'}: row {subject}/{name} onset {r.onset}, apex {r.apex}, offset "
                                  f"{r.offset} ends past the end of {path} (frames 0-{video.count - 1})")
        # Rounding to model frames may land one past the last model frame: keep it in the video.
        onset, apex, offset = (min(to_model_frame(f, video.fps, cfg.fps), len(index) - 1)
                               for f in (r.onset, r.apex, r.offset))
        events.append((onset, apex, max(offset, onset), cfg.classes.index(r.emotion)))
    return VideoItem(subject, name, Path(path), video.fps, video.count, video.frames[index], events)


def find_video(root: Path, subject: str, video: str) -> Path:
    """The frames or video file of one annotated video under ``--video-root``.

    Looked up as ``ROOT/subject/video`` then ``ROOT/video``: a folder of numbered frames or a
    file with a video suffix, named exactly, or else the one entry whose name continues the
    video's with a letter (CAS(ME)^2's ``rawpic/s15/15_0401girlcrashing`` for table video
    ``15_0401``: the workbook has no stimulus word). A folder holding ``color/`` (CAS(ME)^3's
    ``spNO.1/a/color`` beside ``depth/``) is read from ``color/``. See docs/datasets.md.
    """
    tried = [root / subject / video, root / video]
    for look in (_exact, _continued):  # an exact name anywhere before a longer one
        for base in tried:
            found = look(base)
            if found is not None:
                return found / "color" if (found / "color").is_dir() else found
    raise DataSpecError(f"video {subject}/{video} not found (looked for {tried[0]}[.*] and {tried[1]}[.*], "
                        "and names that continue them)")


def _exact(base: Path) -> Path | None:
    if base.is_dir() or base.is_file():
        return base
    for suffix in VIDEO_SUFFIXES:
        if base.with_name(base.name + suffix).is_file():
            return base.with_name(base.name + suffix)
    return None


def _continued(base: Path) -> Path | None:
    """The one folder, or else the one video file, named ``base`` + a letter + more (a stimulus word)."""
    if not base.parent.is_dir():
        return None
    named = [p for p in base.parent.iterdir()
             if p.name.startswith(base.name) and len(p.name) > len(base.name) and p.name[len(base.name)].isalpha()
             and not p.name.startswith(".")]
    for group in ([p for p in named if p.is_dir()], [p for p in named if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]):
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            raise DataSpecError(f"video {base.name}: {len(group)} candidates in {base.parent} "
                                f"({', '.join(sorted(p.name for p in group)[:4])}); rename all but one")
    return None


def group_rows(rows: list[Annotation]) -> dict[tuple[str, str], list[Annotation]]:
    groups: dict[tuple[str, str], list[Annotation]] = {}
    for r in rows:
        groups.setdefault((r.subject, r.video), []).append(r)
    return groups


def load_folder(cfg: FGSLConfig, folder: Path) -> tuple[list[VideoItem], list[Annotation]]:
    """A synthetic-style folder: ``videos/*`` and ``annotations.csv`` (videos without rows are event-free)."""
    rows = read_table(folder / "annotations.csv")
    groups = group_rows(rows)
    subjects = {r.video: r.subject for r in rows}
    items = []
    for path in video_files(folder / "videos"):
        subject = subjects.get(path.stem, path.stem.rsplit("_", 1)[0])
        items.append(load_item(cfg, subject, path.stem, path, groups.get((subject, path.stem), []),
                               table=folder / "annotations.csv"))
    return items, rows


def split_subjects(subjects: list[str], split: str | None, flag: str = "--split",
                   elsewhere: tuple[set[str], str] | None = None) -> set[str]:
    """The subjects ``split`` (``loso:K`` or ``subjects:A,B``) picks out of ``subjects``, for
    ``flag`` (``--split`` picks the held-out test subjects, ``--val`` the validation ones out of
    the rest). ``elsewhere``: subjects already taken by another flag and which, so that asking
    for one of them says where it went rather than "unknown"."""
    subjects = sorted(set(subjects))
    if len(subjects) < 2:
        raise DataSpecError(f"{flag}: a subject split needs at least two subjects, found {len(subjects)}")
    split = split or "loso:0"
    kind, _, value = split.partition(":")
    if kind == "loso":
        try:
            k = int(value or 0)
        except ValueError:
            raise DataSpecError(f"{flag} {split!r}: loso takes a fold number, e.g. loso:3") from None
        if not 0 <= k < len(subjects):
            raise DataSpecError(f"{flag} {split!r}: fold must be in 0..{len(subjects) - 1}")
        return {subjects[k]}
    if kind == "subjects":
        held = {s.strip() for s in value.split(",") if s.strip()}
        if elsewhere is not None and held & elsewhere[0]:
            taken = sorted(held & elsewhere[0])
            raise DataSpecError(f"{flag} {split!r}: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} already "
                                f"{elsewhere[1]}; choose among {', '.join(subjects)}")
        unknown = held - set(subjects)
        if not held or unknown:
            raise DataSpecError(f"{flag} {split!r}: unknown subjects {sorted(unknown)}; known: {', '.join(subjects)}")
        return held
    raise DataSpecError(f"{flag} {split!r}: use loso:K or subjects:A,B")


def dataset_fps(kind: str) -> float | None:
    """The frame rate of a data set's frame folders (None for our table: files carry theirs)."""
    if kind == "table":
        return None
    from fgsl.data.datasets import DATASET_FPS

    return DATASET_FPS[kind]


def read_annotation_file(kind: str, path: Path, skip_bad: bool = False,
                         micro_sheet: Path | None = None) -> list[Annotation]:
    """Our table, or a data set's own file (``skip_bad``: drop contradictory rows with a
    warning; ``micro_sheet``: SAMM's micro-expression sheet, found beside ``path`` if None)."""
    if kind == "table":
        return read_table(path)
    from fgsl.data import datasets  # the data-set specific layouts

    return datasets.read_annotations(path, kind, skip_bad=skip_bad, micro_sheet=micro_sheet)


def refuse_shared_files(files: dict[tuple[str, str], Path], table: Path) -> None:
    """Refuse two (subject, video) rows that find one file (a video listed under two subjects,
    found through ``--video-root``'s ``ROOT/VIDEO`` fallback): it would be trained on as one
    subject and scored as the other's held-out test, without a word."""
    seen: dict[object, tuple[str, str]] = {}
    for key, found in files.items():
        other = seen.setdefault(file_identity(found), key)
        if other != key:
            raise DataSpecError(f"{table}: {other[0]}/{other[1]} and {key[0]}/{key[1]} are one video file ({found}): "
                                "a video belongs to one subject; fix the table, or give each subject its own folder")


def load_annotated(cfg: FGSLConfig, kind: str, path: Path, video_root: Path | None, split: str | None,
                   skip_bad: bool = False, val: str = "auto", micro_sheet: Path | None = None,
                   aligned: bool = False, progress: bool = False) -> TrainData:
    """The annotated videos, split by subject (module docstring), read as centre crops or
    (``aligned``, ``fgsl.train --align-faces``) as MediaPipe-aligned face crops, with a
    progress bar over the videos when ``progress``."""
    if video_root is None:
        raise DataSpecError(f"--data {kind}=... needs --video-root DIR (where the videos are)")
    rows = read_annotation_file(kind, path, skip_bad, micro_sheet)
    held = split_subjects([r.subject for r in rows], split)
    rest = sorted({r.subject for r in rows} - held)
    if val == "none" or (val == "auto" and len(rest) < 2):
        checked: set[str] = set()
    else:
        checked = split_subjects(rest, None if val == "auto" else val, "--val", (held, "held out for testing by --split"))
        if checked == set(rest):
            raise DataSpecError(f"--val {val!r}: leaves no training subject")
    parts: dict[str, list[VideoItem]] = {"train": [], "val": [], "test": []}
    groups = group_rows(rows)
    files = {key: find_video(video_root, *key) for key in groups}
    refuse_shared_files(files, path)
    for (subject, video), group in tqdm(groups.items(), desc="reading videos", unit="video", total=len(groups),
                                        disable=not progress, file=sys.stderr):
        item = load_item(cfg, subject, video, files[subject, video], group, dataset_fps(kind), path,
                         aligned=aligned, progress=progress)
        parts["test" if subject in held else "val" if subject in checked else "train"].append(item)
    description = (f"{kind}={path} (held out: {', '.join(sorted(held))}; validation: {', '.join(sorted(checked)) or 'none'}"
                   f"{'; faces aligned as the live spotter aligns them' if aligned else ''})")
    return TrainData(parts["train"], parts["test"], [r for r in rows if r.subject in held], description,
                     parts["val"], [r for r in rows if r.subject in checked])


__all__ = [
    "DataSpecError",
    "TrainData",
    "VideoItem",
    "default_face_videos",
    "find_video",
    "load_annotated",
    "load_folder",
    "load_item",
    "parse",
    "refuse_shared_files",
    "split_subjects",
    "video_files",
]
