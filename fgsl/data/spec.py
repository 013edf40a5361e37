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
    folder of numbered frames or a file with any extension). The split is by subject:
    ``--split loso:K`` holds out the K-th subject (sorted), ``--split subjects:A,B`` holds
    out the named ones. Validation subjects come from the remaining ones the same way
    (``--val loso:K`` / ``subjects:A,B``; ``auto``: the first remaining subject when at
    least two remain; ``none``: no validation).

Frames are loaded once, as RGB crops at the model's input size, resampled to the model's
fps; annotations move to model frames with the same rounding (``round(src * fps_model /
fps_src)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgsl.config import FGSLConfig
from fgsl.data.table import Annotation, AnnotationError, read_table
from fgsl.data.video import read_centre_crops, resample_indices

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
    for candidate in (os.environ.get("FGSL_FACE_VIDEOS"), ROOT.parent / "shared" / "data", ROOT / "samples"):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("*.mp4")):
            return Path(candidate)
    raise DataSpecError("no face videos for synthetic data: pass --data synthetic=DIR")


def parse(spec: str) -> tuple[str, str | None]:
    kind, _, value = spec.partition("=")
    kinds = ("synthetic", "table", "casme2", "casme3", "samm")
    if kind not in kinds:
        raise DataSpecError(f"--data {spec!r}: kind must be one of {', '.join(kinds)} (e.g. casme2=annotations.xlsx)")
    if kind != "synthetic" and not value:
        raise DataSpecError(f"--data {kind} needs a file: --data {kind}=ANNOTATIONS")
    return kind, value or None


def load_item(cfg: FGSLConfig, subject: str, name: str, path: Path, rows: list[Annotation],
              fps: float | None = None, table: Path | None = None) -> VideoItem:
    """Read a video (``fps``: the data set's rate, needed for frame folders) and move its
    annotations (from ``table``, named in errors) to model frames.

    A row that ends past the video's last frame is refused: its event never fits in a window,
    and every window that would cut it is dropped, so it silently removes training data."""
    video = read_centre_crops(path, cfg.image_size, fps if Path(path).is_dir() else None)
    index = resample_indices(video.count, video.fps, cfg.fps)
    scale = cfg.fps / video.fps
    events = []
    for r in rows:
        if r.emotion not in cfg.classes:
            raise AnnotationError(f"{subject}/{name}: emotion {r.emotion!r} is not a class of this model")
        if r.offset >= video.count:
            raise AnnotationError(f"{table or 'annotations'}: row {subject}/{name} onset {r.onset}, apex {r.apex}, offset "
                                  f"{r.offset} ends past the end of {path} (frames 0-{video.count - 1})")
        # Rounding to model frames may land one past the last model frame: keep it in the video.
        onset, apex, offset = (min(int(round(f * scale)), len(index) - 1) for f in (r.onset, r.apex, r.offset))
        events.append((onset, apex, max(offset, onset), cfg.classes.index(r.emotion)))
    return VideoItem(subject, name, Path(path), video.fps, video.count, video.frames[index], events)


def find_video(root: Path, subject: str, video: str) -> Path:
    tried = [root / subject / video, root / video]
    for base in tried:
        if base.is_dir() or base.is_file():
            return base
        for suffix in VIDEO_SUFFIXES:
            if base.with_name(base.name + suffix).is_file():
                return base.with_name(base.name + suffix)
    raise DataSpecError(f"video {subject}/{video} not found (looked for {tried[0]}[.*] and {tried[1]}[.*])")


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
    for path in sorted((folder / "videos").iterdir()):
        subject = subjects.get(path.stem, path.stem.rsplit("_", 1)[0])
        items.append(load_item(cfg, subject, path.stem, path, groups.get((subject, path.stem), []),
                               table=folder / "annotations.csv"))
    return items, rows


def split_subjects(subjects: list[str], split: str | None) -> set[str]:
    """Held-out subjects for ``--split``."""
    subjects = sorted(set(subjects))
    if len(subjects) < 2:
        raise DataSpecError(f"a subject split needs at least two subjects, found {len(subjects)}")
    split = split or "loso:0"
    kind, _, value = split.partition(":")
    if kind == "loso":
        try:
            k = int(value or 0)
        except ValueError:
            raise DataSpecError(f"--split {split!r}: loso takes a fold number, e.g. loso:3") from None
        if not 0 <= k < len(subjects):
            raise DataSpecError(f"--split {split!r}: fold must be in 0..{len(subjects) - 1}")
        return {subjects[k]}
    if kind == "subjects":
        held = {s.strip() for s in value.split(",") if s.strip()}
        unknown = held - set(subjects)
        if not held or unknown:
            raise DataSpecError(f"--split {split!r}: unknown subjects {sorted(unknown)}; known: {', '.join(subjects)}")
        return held
    raise DataSpecError(f"--split {split!r}: use loso:K or subjects:A,B")


def dataset_fps(kind: str) -> float | None:
    """The frame rate of a data set's frame folders (None for our table: files carry theirs)."""
    if kind == "table":
        return None
    from fgsl.data.datasets import DATASET_FPS

    return DATASET_FPS[kind]


def read_annotation_file(kind: str, path: Path, skip_bad: bool = False) -> list[Annotation]:
    """Our table, or a data set's own file (``skip_bad``: drop contradictory rows with a warning)."""
    if kind == "table":
        return read_table(path)
    from fgsl.data import datasets  # the data-set specific layouts

    return datasets.read_annotations(path, kind, skip_bad=skip_bad)


def load_annotated(cfg: FGSLConfig, kind: str, path: Path, video_root: Path | None, split: str | None,
                   skip_bad: bool = False, val: str = "auto") -> TrainData:
    if video_root is None:
        raise DataSpecError(f"--data {kind}=... needs --video-root DIR (where the videos are)")
    rows = read_annotation_file(kind, path, skip_bad)
    held = split_subjects([r.subject for r in rows], split)
    rest = sorted({r.subject for r in rows} - held)
    if val == "none" or (val == "auto" and len(rest) < 2):
        checked: set[str] = set()
    else:
        checked = split_subjects(rest, None if val == "auto" else val)
        if checked == set(rest):
            raise DataSpecError(f"--val {val!r}: leaves no training subject")
    parts: dict[str, list[VideoItem]] = {"train": [], "val": [], "test": []}
    for (subject, video), group in group_rows(rows).items():
        item = load_item(cfg, subject, video, find_video(video_root, subject, video), group, dataset_fps(kind), path)
        parts["test" if subject in held else "val" if subject in checked else "train"].append(item)
    description = f"{kind}={path} (held out: {', '.join(sorted(held))}; validation: {', '.join(sorted(checked)) or 'none'})"
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
    "split_subjects",
]
