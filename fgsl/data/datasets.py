"""Readers for the licensed micro-expression data sets, into the one annotation table.

``read_annotations(path, dataset)`` reads the annotation file a data set ships with
(``casme2``: CAS(ME)^2, ``casme3``: CAS(ME)^3 part A, ``samm``: SAMM long videos) into
:class:`fgsl.data.table.Annotation` rows, so training and scoring never see a data set's
own quirks. What each reader does, and where every fact comes from, is in
``docs/datasets.md``; the short version:

* Frame numbers: all three data sets number their frames from 1 (CAS(ME)^2 ``img001.jpg``,
  CAS(ME)^3 ``1.jpg``, SAMM ``006_1_0001.jpg``); the table holds 0-based indices of the
  source video's own frames (docs/design.md), so every reader subtracts :data:`FIRST_FRAME`.
  The table stays in source frames; :func:`fgsl.data.video.to_model_frame` converts to the
  model's fps.
* Unannotated values, the same rule for every data set (they occur in the real files):
  offset 0 means "not annotated" and becomes the apex (the CAS(ME)^2 convention used by the
  MEGC baselines); apex 0 or -1 means "not annotated" (SAMM-LV states -1 in its preamble)
  and becomes the middle frame ``(onset + offset) // 2``; onset 0 means "from the first
  frame" (SAMM-LV's Duration column counts those rows from the video's start).
* Emotions are mapped to the MEGC classes by one table per data set (below); a value that
  is not in the table is an error, never silently ``others``.
* Every bad row, missing file, sheet or column is one :class:`AnnotationError` naming the
  file, the sheet, the spreadsheet row as Excel shows it, and the reason. The public copies
  of the real files contain a few contradictory rows (listed in docs/datasets.md); pass
  ``skip_bad=True`` to drop such rows with one :class:`AnnotationWarning` each instead.

Files are read with openpyxl (``.xlsx``); a CSV export of a single sheet (``.csv``) is
accepted where the data set needs only one sheet (CAS(ME)^3, both SAMM sheets). Old
``.xls`` workbooks are refused with a clear message (save them as ``.xlsx``).
"""

from __future__ import annotations

import csv
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fgsl.data.table import Annotation, AnnotationError, write_table

DATASETS: tuple[str, ...] = ("casme2", "casme3", "samm")

#: Recording frame rate of each data set (CAS(ME)^2: Qu et al. 2018; CAS(ME)^3 part A:
#: Li et al. 2022; SAMM: Davison et al. 2018). Annotation frame numbers count these frames.
DATASET_FPS: dict[str, float] = {"casme2": 30.0, "casme3": 30.0, "samm": 200.0}

#: Number of the first frame in each data set's own numbering (image files and annotations).
FIRST_FRAME: dict[str, int] = {"casme2": 1, "casme3": 1, "samm": 1}

#: CAS(ME)^2 column 7 (estimated emotion) already uses the four MEGC classes.
CASME2_EMOTIONS: dict[str, str] = {
    "negative": "negative",
    "positive": "positive",
    "surprise": "surprise",
    "others": "others",
}
#: CAS(ME)^3 part A ``emotion`` column (seven categories) -> MEGC classes.
CASME3_EMOTIONS: dict[str, str] = {
    "anger": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sad": "negative",
    "happy": "positive",
    "surprise": "surprise",
    "others": "others",
}
#: SAMM ``Estimated Emotion`` (micro-expression sheet) -> MEGC classes (MEGC 2019 composite).
SAMM_EMOTIONS: dict[str, str] = {
    "anger": "negative",
    "contempt": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sadness": "negative",
    "happiness": "positive",
    "surprise": "surprise",
    "other": "others",
}
#: Emotion of rows that carry none: SAMM-LV macro-expressions (the data set labels only MEs).
UNLABELLED_EMOTION = "others"

CASME2_TYPES: dict[str, str] = {"micro-expression": "micro", "macro-expression": "macro"}
#: SAMM-LV ``Type``, compared without spaces ("Micro - 1/2" = micro-expression under 0.5 s).
SAMM_TYPES: dict[str, str] = {"micro-1/2": "micro", "macro": "macro"}

#: Header rows are searched for within this many rows (SAMM puts up to ~13 rows of notes first).
MAX_PREAMBLE_ROWS = 50


class AnnotationWarning(UserWarning):
    """A bad row dropped because ``skip_bad=True`` (the message is the error it would raise)."""


class _RowError(Exception):
    """Why one row is bad (the caller adds the file, sheet and row number)."""


@dataclass(frozen=True)
class Sheet:
    """One sheet of a workbook (or a whole CSV file): ``rows[i]`` is spreadsheet row ``i + 1``."""

    path: Path
    name: str | None
    rows: list[tuple[object, ...]]

    def where(self, number: int | None = None) -> str:
        place = f"{self.path}" + (f", sheet {self.name!r}" if self.name is not None else "")
        return place if number is None else f"{place}, row {number}"


# --------------------------------------------------------------------------- public API


def read_annotations(
    path: str | Path,
    dataset: str,
    *,
    micro_sheet: str | Path | None = None,
    skip_bad: bool = False,
) -> list[Annotation]:
    """Read a data set's annotation file; ``micro_sheet`` is SAMM's micro-expression sheet."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}: choose one of {', '.join(DATASETS)}")
    if dataset == "samm":
        return read_samm(path, micro_sheet, skip_bad=skip_bad)
    if micro_sheet is not None:
        raise ValueError(f"micro_sheet is only used with the samm data set, not {dataset}")
    reader = read_casme2 if dataset == "casme2" else read_casme3
    return reader(path, skip_bad=skip_bad)


def read_casme2(path: str | Path, *, skip_bad: bool = False) -> list[Annotation]:
    """CAS(ME)^2 ``CAS(ME)^2code_final.xlsx``.

    The first sheet (``CASFEcode_final``) has no header; its columns are participant, name
    (``anger1_1``: stimulus ``anger1``, expression 1), onset, apex, offset, AUs, estimated
    emotion, type, self-reported emotion. Sheet ``naming rule1`` maps participants to image
    folders (15, ``s15``, 1) and ``naming rule2`` maps stimulus codes to names (0401,
    ``anger1``); subject becomes ``s15`` and video ``15_0401``, the prefix of the data set's
    ``rawpic/s15/15_0401girlcrashing`` folder and ``rawvideo`` file.
    """
    sheets = _load(path, needs_sheets=True)
    naming1 = _sheet_named(sheets, "naming rule1")
    naming2 = _sheet_named(sheets, "naming rule2")
    code = next((s for s in sheets if not _norm(s.name or "").startswith("naming rule")), None)
    if code is None:
        raise AnnotationError(f"{naming1.path}: no annotation sheet besides the naming rules")
    width = max((_width(r) for r in code.rows), default=0)
    if width < 8:
        raise AnnotationError(
            f"{code.where()}: {width} columns, expected at least 8 "
            "(participant, name, onset, apex, offset, AUs, emotion, type)"
        )
    folders = _casme2_folders(naming1)
    stimuli = _casme2_stimuli(naming2)

    def parse(values: tuple[object, ...]) -> Annotation:
        values = tuple(values) + (None,) * 8
        participant = _integer(values[0], "participant")
        if participant not in folders:
            raise _RowError(f"participant {participant} is not in sheet 'naming rule1'")
        folder, number = folders[participant]
        name = _required_text(values[1], "name")
        stimulus = name.rsplit("_", 1)[0].lower()
        if stimulus not in stimuli:
            raise _RowError(f"name {name!r}: stimulus {stimulus!r} is not in sheet 'naming rule2'")
        onset, apex, offset = _frames(values[2], values[3], values[4], FIRST_FRAME["casme2"])
        return Annotation(
            subject=folder,
            video=f"{number}_{stimuli[stimulus]}",
            onset=onset,
            apex=apex,
            offset=offset,
            type=_lookup(values[7], CASME2_TYPES, "type"),
            emotion=_lookup(values[6], CASME2_EMOTIONS, "emotion"),
            aus=_aus(values[5]),
        )

    return _read_rows(code, 0, parse, skip_bad)


def read_casme3(path: str | Path, *, skip_bad: bool = False) -> list[Annotation]:
    """CAS(ME)^3 part A ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` (micro-expressions).

    Sheet ``label``, header row ``Subject, Filename, Onset, Apex, Offset, AU, Objective
    class, emotion``; frame numbers are the ``<n>.jpg`` indices of ``spNO.1/a/color``
    (stored as text in the real file). Subject stays ``spNO.1``, video the letter ``a``.
    """
    sheet = _preferred_sheet(_load(path), "label")
    header, col = _header(sheet, ("Filename", "Subject", "Onset", "Apex", "Offset", "AU", "emotion"))

    def parse(values: tuple[object, ...]) -> Annotation:
        get = _getter(values, col)
        onset, apex, offset = _frames(get("Onset"), get("Apex"), get("Offset"), FIRST_FRAME["casme3"])
        return Annotation(
            subject=_required_text(get("Subject"), "Subject"),
            video=_required_text(get("Filename"), "Filename"),
            onset=onset,
            apex=apex,
            offset=offset,
            type="micro",
            emotion=_lookup(get("emotion"), CASME3_EMOTIONS, "emotion"),
            aus=_aus(get("AU")),
        )

    return _read_rows(sheet, header + 1, parse, skip_bad)


def read_samm(
    path: str | Path, micro_sheet: str | Path | None = None, *, skip_bad: bool = False
) -> list[Annotation]:
    """SAMM long videos ``SAMM_LongVideos_V*_Release.xlsx`` joined with the SAMM ME sheet.

    Sheet ``FACS_Movement_Only``: notes, then the header ``Subject, Filename, Inducement
    Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes`` (row 10 in V2). The
    long-video file has no emotions: micro-expression rows take ``Estimated Emotion`` from
    the row with the same ``Filename`` (clip id ``006_1_2``) in the SAMM micro-expression
    sheet (``SAMM_Micro_FACS_Codes_v2.xlsx``, found next to ``path`` when not given); macro
    rows get :data:`UNLABELLED_EMOTION`. Subject becomes ``006``, video ``006_1`` (the
    ``SAMM_longvideos/006_1`` frame folder). A workbook without ``FACS_Movement_Only`` is read
    from its first sheet, with a warning naming it (:func:`_preferred_sheet`).
    """
    sheet = _preferred_sheet(_load(path), "FACS_Movement_Only")
    names = ("Filename", "Subject", "Onset", "Apex", "Offset", "Type", "Action Units")
    header, col = _header(sheet, names)
    micro_path = Path(micro_sheet) if micro_sheet is not None else find_samm_micro_sheet(path)
    emotions = _samm_micro_emotions(micro_path)

    def parse(values: tuple[object, ...]) -> Annotation:
        get = _getter(values, col)
        subject = _samm_subject(get("Subject"))
        clip = _required_text(get("Filename"), "Filename")
        parts = clip.split("_")
        if len(parts) < 3 or parts[0] != subject:
            raise _RowError(f"Filename {clip!r} is not <subject>_<video>_<n> of subject {subject}")
        kind = _lookup(get("Type"), SAMM_TYPES, "Type", squeeze=True)
        onset, apex, offset = _frames(get("Onset"), get("Apex"), get("Offset"), FIRST_FRAME["samm"])
        emotion = UNLABELLED_EMOTION if kind == "macro" else _samm_emotion(clip, emotions, micro_path)
        video = "_".join(parts[:2])
        return Annotation(subject, video, onset, apex, offset, kind, emotion, _aus(get("Action Units")))

    return _read_rows(sheet, header + 1, parse, skip_bad)


def find_samm_micro_sheet(long_path: str | Path) -> Path:
    """The SAMM micro-expression sheet beside the long-video file: a ``.xlsx``/``.csv`` whose
    name has ``micro`` and ``facs``, looked for in the file's folder, else the parent folder,
    else all the parent's other folders together (the MEGC baselines keep ``SAMMLV/`` and
    ``SAMM/`` side by side).

    Why several in the first place that has any is an error, not the first by name: the
    emotions of every micro-expression come from this sheet, and a folder of old releases
    beside ``SAMM/`` (``A_old/SAMM_Micro_FACS_Codes_v1.xlsx``) sorts first; only the user knows
    which is meant. The long-video file must exist: without it, "no micro-expression sheet"
    would hide the real problem.
    """
    long_path = _existing_file(Path(long_path))
    here = long_path.absolute().parent  # (absolute: the parent of ``long.xlsx`` is ``.``, and of ``.`` too)
    up = here.parent
    siblings = [p for p in _listing(up) if p.is_dir() and p != here] if up != here else []
    for place, folders in (("its folder", [here]), ("the parent folder", [up]),
                           ("the parent's other folders", siblings)):
        found = [p for folder in folders for p in _listing(folder) if _is_micro_sheet(p)]
        if len(found) > 1:
            raise AnnotationError(
                f"{long_path}: several SAMM micro-expression sheets (emotions) in {place}: "
                f"{', '.join(map(str, found))}; pass the one to use as micro_sheet= (--micro-sheet)"
            )
        if found:
            return found[0]
    raise AnnotationError(
        f"{long_path}: the SAMM micro-expression sheet (emotions) is needed; found no file like "
        "SAMM_Micro_FACS_Codes_v2.xlsx in its folder, the parent folder or a sibling folder: pass micro_sheet= "
        "(--micro-sheet)"
    )


def _listing(folder: Path) -> list[Path]:
    """``folder``'s entries, sorted; none where it cannot be listed (an unreadable folder beside
    the data set holds no sheet that could be read, and must not stop the search)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _is_micro_sheet(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.suffix.lower() in (".xlsx", ".csv")
        and "micro" in name
        and "facs" in name
        and not name.startswith(("~$", "."))  # Excel lock files, hidden files
    )


def to_dataset_frame(index: int, dataset: str) -> int:
    """0-based table index -> the data set's own frame number (for its official scorer)."""
    return index + FIRST_FRAME[dataset]


# --------------------------------------------------------------------------- rows


def _read_rows(
    sheet: Sheet, start: int, parse: Callable[[tuple[object, ...]], Annotation], skip_bad: bool
) -> list[Annotation]:
    """Parse every non-blank row from index ``start``; one error (or warning) per bad row."""
    rows: list[Annotation] = []
    seen = False
    for index in range(start, len(sheet.rows)):
        values = sheet.rows[index]
        if all(_empty(v) for v in values):
            continue
        seen = True
        try:
            row = parse(values)
            _check(row)
        except _RowError as exc:
            message = f"{sheet.where(index + 1)}: {exc}"
            if not skip_bad:
                raise AnnotationError(message) from None
            warnings.warn(message, AnnotationWarning, stacklevel=3)
            continue
        rows.append(row)
    if not seen:
        raise AnnotationError(f"{sheet.where()}: no annotation rows")
    return rows


def _check(row: Annotation) -> None:
    """The table's own consistency check, as a row error."""
    try:
        row.check()
    except ValueError as exc:
        raise _RowError(str(exc)) from None


def _frames(onset_raw: object, apex_raw: object, offset_raw: object, first: int) -> tuple[int, int, int]:
    """Data set frame numbers -> 0-based indices, after the unannotated-value rules."""
    onset = _integer(onset_raw, "onset")
    apex = _integer(apex_raw, "apex")
    offset = _integer(offset_raw, "offset")
    if offset == 0:  # offset not annotated: the expression ends at its apex
        if apex <= 0:
            raise _RowError(f"neither apex ({apex}) nor offset ({offset}) is annotated")
        offset = apex
    if onset == 0:  # coded from the start of the video
        onset = first
    if apex in (0, -1):  # apex not annotated
        apex = (onset + offset) // 2
    for name, value in (("onset", onset), ("apex", apex), ("offset", offset)):
        if value < first:
            raise _RowError(f"{name} {value} is before the first frame ({first})")
    if onset > offset:
        raise _RowError(f"onset {onset} is after offset {offset}")
    if not onset <= apex <= offset:
        raise _RowError(f"apex {apex} is outside onset {onset} .. offset {offset}")
    return onset - first, apex - first, offset - first


def _integer(value: object, name: str) -> int:
    """A whole number from an int, an integral float (1234.0) or text ("355")."""
    if _empty(value):
        raise _RowError(f"{name} is missing")
    if isinstance(value, bool):
        raise _RowError(f"{name} {value!r} is not a whole frame number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d{1,18}(\.0*)?", text):  # (a 5000-digit "number" exceeds int()'s digit limit)
            return int(float(text)) if "." in text else int(text)
    raise _RowError(f"{name} {value!r:.60} is not a whole frame number")


def _lookup(value: object, table: dict[str, str], name: str, squeeze: bool = False) -> str:
    """Map a label through ``table`` (case-insensitive); unknown labels are errors."""
    if _empty(value):
        raise _RowError(f"{name} is missing")
    key = str(value).strip().lower()
    key = key.replace(" ", "") if squeeze else " ".join(key.split())
    if key not in table:
        raise _RowError(f"{name} {value!r} is not one of {', '.join(table)}")
    return table[key]


def _required_text(value: object, name: str) -> str:
    if _empty(value):
        raise _RowError(f"{name} is missing")
    return _text(value)


def _text(value: object) -> str:
    """Cell as text; whole floats lose their ``.0`` (Excel stores AU ``4`` as 4.0)."""
    if _empty(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _aus(value: object) -> str:
    text = _text(value)
    return "" if text.upper() == "NULL" else text


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _width(values: Sequence[object]) -> int:
    """Number of columns up to the last filled cell."""
    return max((j + 1 for j, v in enumerate(values) if not _empty(v)), default=0)


# --------------------------------------------------------------------------- files


def _existing_file(path: Path) -> Path:
    """``path``, or the error for an annotation file that is missing or a folder."""
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found")
    if path.is_dir():
        raise AnnotationError(f"{path}: is a folder, not an annotation file")
    return path


def _load(path: str | Path, needs_sheets: bool = False) -> list[Sheet]:
    """All sheets of an ``.xlsx`` workbook, or the one sheet of a ``.csv`` export."""
    path = _existing_file(Path(path))
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise AnnotationError(f"{path}: old Excel .xls workbooks are not read: save it as .xlsx")
    if suffix == ".csv":
        if needs_sheets:
            raise AnnotationError(f"{path}: a CSV holds one sheet; this data set needs the whole .xlsx workbook")
        return [Sheet(path, None, _csv_rows(path))]
    if suffix not in (".xlsx", ".xlsm"):
        kind = suffix or "(none)"
        raise AnnotationError(f"{path}: unsupported annotation file type {kind}: expected .xlsx or .csv")
    return _xlsx_sheets(path)


def _xlsx_sheets(path: Path) -> list[Sheet]:
    from openpyxl import load_workbook  # imported here: only annotation reading needs it

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise AnnotationError(f"{path}: cannot read as an .xlsx workbook ({exc})") from None
    try:
        return [Sheet(path, ws.title, list(ws.iter_rows(min_row=1, values_only=True))) for ws in book.worksheets]
    finally:
        book.close()


def _csv_rows(path: Path) -> list[tuple[object, ...]]:
    for encoding in ("utf-8-sig", "cp1252"):  # Excel on Windows exports cp1252
        try:
            with path.open(newline="", encoding=encoding) as f:
                reader = csv.reader(f)
                return [tuple(r) for r in reader]
        except UnicodeDecodeError:
            continue
        except csv.Error as exc:  # an unclosed quote runs into a field over the csv module's limit
            raise AnnotationError(f"{path}: row {reader.line_num}: {exc} (an unclosed quote?)") from None
    raise AnnotationError(f"{path}: cannot decode this CSV (not UTF-8 or Windows-1252 text)")


def _norm(name: str) -> str:
    return " ".join(str(name).split()).lower()


def _sheet_named(sheets: list[Sheet], name: str) -> Sheet:
    for sheet in sheets:
        if _norm(sheet.name or "") == name:
            return sheet
    found = ", ".join(repr(s.name) for s in sheets)
    raise AnnotationError(f"{sheets[0].path}: no sheet {name!r} (sheets: {found})")


def _preferred_sheet(sheets: list[Sheet], name: str) -> Sheet:
    """The sheet called ``name`` if there is one, else the first (CSV exports, renamed sheets).

    Why a workbook's first sheet comes with a warning naming it: it is a guess (a re-saved or
    renamed workbook), and rows read from the wrong sheet would pass the header check whenever
    its columns match; the user sees which sheet was read. A CSV has one sheet: no guess.
    """
    chosen = next((s for s in sheets if _norm(s.name or "") == _norm(name)), sheets[0])
    if chosen.name is not None and _norm(chosen.name) != _norm(name):
        others = ", ".join(repr(s.name) for s in sheets)
        warnings.warn(f"{chosen.path}: no sheet {name!r}; reading the first sheet, {chosen.name!r} (sheets: {others})",
                      stacklevel=3)
    return chosen


def _header(sheet: Sheet, names: Sequence[str]) -> tuple[int, dict[str, int]]:
    """Index of the header row (the first row with a ``names[0]`` cell) and column positions."""
    for index, row in enumerate(sheet.rows[:MAX_PREAMBLE_ROWS]):
        cells = {_norm(v): j for j, v in enumerate(row) if not _empty(v)}
        if _norm(names[0]) not in cells:
            continue
        missing = [n for n in names if _norm(n) not in cells]
        if missing:
            found = ", ".join(str(v).strip() for v in row if not _empty(v))
            where = sheet.where(index + 1)
            raise AnnotationError(f"{where}: header has no column {', '.join(missing)} (found: {found})")
        return index, {n: cells[_norm(n)] for n in names}
    raise AnnotationError(
        f"{sheet.where()}: no header row with a {names[0]!r} column in the first {MAX_PREAMBLE_ROWS} rows"
    )


def _getter(values: tuple[object, ...], col: dict[str, int]) -> Callable[[str], object]:
    return lambda name: values[col[name]] if col[name] < len(values) else None


# --------------------------------------------------------------------------- data set details


def _casme2_folders(sheet: Sheet) -> dict[int, tuple[str, str]]:
    """``naming rule1`` rows (15, 's15', 1) -> {participant 1: ('s15', '15')}."""
    folders: dict[int, tuple[str, str]] = {}
    for row in sheet.rows:
        if len(row) < 3:
            continue
        match = re.fullmatch(r"s(\d+)", _text(row[1]).lower())
        try:
            participant = _integer(row[2], "participant")
        except _RowError:
            continue
        if match:
            folders[participant] = (_text(row[1]), match.group(1))
    if not folders:
        raise AnnotationError(f"{sheet.where()}: no rows like (15, s15, 1): number, folder, participant")
    return folders


def _casme2_stimuli(sheet: Sheet) -> dict[str, str]:
    """``naming rule2`` rows ('0401', 'anger1') -> {'anger1': '0401'} (codes may be numbers)."""
    stimuli: dict[str, str] = {}
    for row in sheet.rows:
        if len(row) < 2 or _empty(row[1]):
            continue
        try:
            code = _integer(row[0], "code")
        except _RowError:
            continue
        stimuli[_text(row[1]).lower()] = f"{code:04d}"
    if not stimuli:
        raise AnnotationError(f"{sheet.where()}: no rows like (0401, anger1): video code, stimulus name")
    return stimuli


def _samm_subject(value: object) -> str:
    """SAMM subjects are three digits: 6, 6.0 and '006' all become '006'."""
    try:
        return f"{_integer(value, 'Subject'):03d}"
    except _RowError:
        return _required_text(value, "Subject")


def _samm_micro_emotions(path: Path) -> dict[str, tuple[str, str]]:
    """{clip id: (Estimated Emotion, where it is)} from the SAMM micro-expression sheet.

    Its header sits below notes (row 14 in v2) and its type column is called ``Micro``
    there, so only ``Filename`` and ``Estimated Emotion`` are required.
    """
    sheet = _load(path)[0]
    header, col = _header(sheet, ("Filename", "Estimated Emotion"))
    emotions: dict[str, tuple[str, str]] = {}
    for index in range(header + 1, len(sheet.rows)):
        values = sheet.rows[index]
        clip = _text(_getter(values, col)("Filename"))
        if not clip:
            continue
        if clip in emotions:
            first = emotions[clip][1]
            raise AnnotationError(f"{sheet.where(index + 1)}: clip {clip!r} appears twice (first at {first})")
        emotions[clip] = (_text(_getter(values, col)("Estimated Emotion")), f"row {index + 1}")
    if not emotions:
        raise AnnotationError(f"{sheet.where()}: no micro-expression rows")
    return emotions


def _samm_emotion(clip: str, emotions: dict[str, tuple[str, str]], micro_path: Path) -> str:
    if clip not in emotions:
        raise _RowError(f"micro-expression {clip!r} is not in the SAMM micro-expression sheet {micro_path}")
    raw, where = emotions[clip]
    try:
        return _lookup(raw, SAMM_EMOTIONS, "Estimated Emotion")
    except _RowError as exc:
        raise _RowError(f"{exc} ({micro_path}, {where})") from None


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m fgsl.data.datasets samm LONG.xlsx --out table.csv``: read, summarise, convert."""
    from fgsl.cli import ArgumentParser  # (here: reading a data set's file needs no torch)

    parser = ArgumentParser(
        prog="python -m fgsl.data.datasets",
        description="Read a data set's annotation file into the project's annotation table.",
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("path", help="the data set's annotation file (.xlsx)")
    parser.add_argument("--micro-sheet", help="samm: the SAMM micro-expression sheet (if not given, the one found "
                                              "beside PATH, named in the summary; several found is an error)")
    parser.add_argument("--skip-bad-rows", action="store_true", help="drop bad rows with a warning, do not fail")
    parser.add_argument("--out", help="write the annotation table (CSV) here")
    args = parser.parse_args(argv)
    micro_sheet = args.micro_sheet
    if args.dataset == "samm" and micro_sheet is None:
        # Found before --out is checked (writing over it would destroy an input) and named:
        # every micro-expression's emotion comes from it.
        micro_sheet = find_samm_micro_sheet(args.path)
        print(f"micro-expression sheet (emotions): {micro_sheet} (found beside {args.path}; --micro-sheet to choose)")
    if args.out:
        from fgsl.cli import check_output

        sheet_flag = "--micro-sheet" if args.micro_sheet else "the micro-expression sheet"
        check_output("--out", args.out, [("PATH", args.path), (sheet_flag, micro_sheet)])
    rows = read_annotations(args.path, args.dataset, micro_sheet=micro_sheet, skip_bad=args.skip_bad_rows)
    videos = {(r.subject, r.video) for r in rows}
    print(f"{len(rows)} expressions in {len(videos)} videos of {len({r.subject for r in rows})} subjects")
    print("types:", dict(sorted(Counter(r.type for r in rows).items())))
    print("emotions:", dict(sorted(Counter(r.emotion for r in rows).items())))
    print(f"frames: 0-based indices of the {DATASET_FPS[args.dataset]:g} fps source frames")
    if args.out:
        print("wrote", write_table(rows, args.out))
    return 0


if __name__ == "__main__":
    from fgsl.startup import quiet_exit, startup_imports

    # Importing torch (fgsl.cli) takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
    with startup_imports(__name__):
        from fgsl.cli import register_user_error, run

    register_user_error(AnnotationError)
    quiet_exit(run(main))
