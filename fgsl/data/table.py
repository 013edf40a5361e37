"""The one annotation table every data set is read into (and synthetic sets are written as).

Columns: ``subject, video, onset, apex, offset, type, emotion, aus``. Frame numbers are
0-based indices of the source video's own frames, inclusive (docs/design.md: readers convert
each data set's numbering in). ``type`` is ``micro`` or ``macro``; ``emotion`` is one of
the MEGC classes (``negative``, ``positive``, ``surprise``, ``others``); ``aus`` is the
data set's action-unit string, kept verbatim ("" when unknown).
"""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from fgsl.config import MEGC_CLASSES
from fgsl.files import TableTooLarge, atomic_write, read_table_text

COLUMNS = ("subject", "video", "onset", "apex", "offset", "type", "emotion", "aus")
TYPES = ("micro", "macro")


class AnnotationError(ValueError):
    """A bad annotation file or row; the message names the file, the row and the reason."""


@dataclass(frozen=True)
class Annotation:
    subject: str
    video: str
    onset: int
    apex: int
    offset: int
    type: str
    emotion: str
    aus: str = ""

    def check(self) -> None:
        """Raise ``ValueError`` (reason only) if the row is inconsistent."""
        if not self.subject or not self.video:
            raise ValueError("subject and video must not be empty")
        if min(self.onset, self.apex, self.offset) < 0:
            raise ValueError(f"negative frame number (onset {self.onset}, apex {self.apex}, offset {self.offset})")
        if not self.onset <= self.apex <= self.offset:
            raise ValueError(f"frames out of order: onset {self.onset}, apex {self.apex}, offset {self.offset}")
        if self.type not in TYPES:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(TYPES)}")
        if self.emotion not in MEGC_CLASSES:
            raise ValueError(f"emotion {self.emotion!r} is not one of {', '.join(MEGC_CLASSES)}")


def write_table(rows: list[Annotation], path: str | Path) -> Path:
    """Write ``rows`` as the annotation table at ``path`` (folders made as needed).

    Atomically (:func:`fgsl.files.atomic_write`): the table of a synthetic set, or one
    converted from a data set's workbook, is training's ground truth, and a cut-off file would
    read as a shorter table, not as an error."""
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(COLUMNS)
    w.writerows(astuple(r) for r in rows)
    return atomic_write(path, text.getvalue().encode())


def read_table(path: str | Path) -> list[Annotation]:
    """Read a table written by :func:`write_table`; every bad row is a clear error."""
    path = Path(path)
    try:
        text = read_table_text(path)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except UnicodeDecodeError:  # worded as fgsl.evaluate words it
        raise AnnotationError(f"{path}: not a UTF-8 text file") from None
    except TableTooLarge as exc:
        raise AnnotationError(str(exc)) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != COLUMNS:
            raise AnnotationError(f"{path}: header must be {','.join(COLUMNS)}, found {header}")
        rows = []
        for number, values in enumerate(reader, start=2):
            if not values:
                continue
            rows.append(parse_row(values, path, number))
    except csv.Error as exc:  # an unclosed quote runs into a field over the csv module's limit
        raise AnnotationError(f"{path}: row {reader.line_num}: {exc} (an unclosed quote?)") from None
    return rows


def parse_row(values: list[str], path: Path, number: int) -> Annotation:
    if len(values) != len(COLUMNS):
        raise AnnotationError(f"{path}: row {number}: expected {len(COLUMNS)} columns, found {len(values)}")
    kinds = {f.name: f.type for f in fields(Annotation)}
    data: dict[str, object] = {}
    for name, raw in zip(COLUMNS, values):
        raw = raw.strip()
        if kinds[name] in ("int", int):
            try:
                data[name] = int(raw)
            except ValueError:
                raise AnnotationError(f"{path}: row {number}: {name} {raw!r:.60} is not a frame number") from None
        else:
            data[name] = raw
    row = Annotation(**data)  # type: ignore[arg-type]
    try:
        row.check()
    except ValueError as exc:
        raise AnnotationError(f"{path}: row {number}: {exc}") from None
    return row
