"""Data set annotation readers and frame sources: real layouts parse, bad input is one clear error.

Fixtures are in tests/fixtures/datasets (made by make_fixtures.py, real layouts, invented
numbers); broken variants are made here by editing one cell of a good fixture, so each
error test knows exactly which spreadsheet row must be named.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from openpyxl import load_workbook

from fgsl.cli import UsageError
from fgsl.data.datasets import (
    DATASET_FPS,
    FIRST_FRAME,
    AnnotationWarning,
    find_samm_micro_sheet,
    main,
    read_annotations,
    to_dataset_frame,
)
from fgsl.data.frames import open_source
from fgsl.data.table import Annotation, AnnotationError, read_table
from fgsl.data.video import VideoError
from tests.conftest import SAMPLE_VIDEO, disk_full_when_replacing, shared_video
from tests.fixtures.datasets import make_fixtures as fx

CASME2 = fx.CASME2_FILE
CASME3 = fx.CASME3_FILE
SAMM_LONG = fx.SAMM_LONG_FILE
SAMM_MICRO = fx.SAMM_MICRO_FILE


def edited(src: Path, tmp_path: Path, sheet: str, cell: str, value: object) -> Path:
    """A copy of fixture ``src`` (same file name) with one cell changed."""
    book = load_workbook(src)
    book[sheet][cell] = value
    out = tmp_path / src.name
    book.save(out)
    return out


# --------------------------------------------------------------------------- real layouts


def test_fixtures_are_what_make_fixtures_writes():
    for path, sheets in fx.WORKBOOKS.items():
        book = load_workbook(path, read_only=True)
        assert book.sheetnames == list(sheets)
        for name, rows in sheets.items():
            got = [tuple(v for v in r) for r in book[name].iter_rows(values_only=True)]
            want = [tuple(row) + (None,) * (len(got[i]) - len(row)) for i, row in enumerate(rows)]
            assert got == want, f"{path.name} {name}: run make_fixtures.py"
        book.close()


def test_casme2_layout_naming_sheets_and_rules():
    rows = read_annotations(CASME2, "casme2")
    assert len(rows) == 5
    # participant 1 -> folder s15 (naming rule1); anger1 -> 0401 (naming rule2); 1-based -> 0-based
    assert rows[0] == Annotation("s15", "15_0401", 556, 571, 607, "macro", "negative", "4+10+14+15")
    # offset 0 = not annotated: ends at the apex; AUs "NULL" = none
    assert rows[1] == Annotation("s15", "15_0402", 2154, 2162, 2162, "macro", "negative", "")
    # micro-expression type; numeric AU cell kept as text
    assert (rows[2].subject, rows[2].video, rows[2].type, rows[2].aus) == ("s16", "16_0101", "micro", "4")
    # apex 0 = not annotated: middle frame (300 + 320) // 2 = 310 -> index 309; "Positive" any case;
    # stimulus code stored as the number 502 is zero-padded
    assert rows[3] == Annotation("s16", "16_0502", 299, 309, 319, "macro", "positive", "12")
    # two-digit expression number in the name ("happy1_10")
    assert (rows[4].video, rows[4].onset, rows[4].emotion) == ("16_0502", 40, "surprise")


def test_casme3_layout_text_frames_and_rules():
    rows = read_annotations(CASME3, "casme3")
    assert rows[0] == Annotation("spNO.1", "a", 354, 358, 359, "micro", "others", "5")
    assert [r.emotion for r in rows] == ["others", "negative", "positive", "others", "surprise", "negative", "negative"]
    assert rows[2].video == "J"  # the real file has capital letters too: kept verbatim
    assert (rows[3].onset, rows[3].apex, rows[3].offset) == (1811, 1823, 1823)  # offset 0 -> apex
    # onset 0 -> first frame, apex 0 -> middle of 1..25
    assert (rows[4].onset, rows[4].apex, rows[4].offset) == (0, 12, 24)
    assert {r.type for r in rows} == {"micro"}


def test_samm_header_detection_join_and_rules():
    rows = read_annotations(SAMM_LONG, "samm")  # micro sheet found in the sibling SAMM/ folder
    assert len(rows) == 7
    assert rows[0] == Annotation("006", "006_1", 565, 647, 742, "macro", "others", "4(B/C)+7B")
    # joined on Filename with the micro sheet: Anger -> negative, Happiness -> positive, Other -> others
    assert rows[1] == Annotation("006", "006_1", 3561, 3587, 3631, "micro", "negative", "4+7")
    assert (rows[2].subject, rows[2].onset, rows[2].emotion) == ("006", 1911, "positive")  # subject 6, 1912.0
    assert (rows[3].onset, rows[3].apex, rows[3].offset) == (0, 2838, 2855)  # onset 0 -> first frame
    assert (rows[4].onset, rows[4].apex, rows[4].offset) == (2048, 2098, 2149)  # apex -1 -> middle
    # one Filename used by a micro and a macro row: only the micro row takes the emotion
    assert [(r.type, r.emotion) for r in rows[5:]] == [("micro", "others"), ("macro", "others")]


def test_samm_micro_sheet_auto_found_or_given_as_csv():
    assert find_samm_micro_sheet(SAMM_LONG) == SAMM_MICRO
    from_csv = read_annotations(SAMM_LONG, "samm", micro_sheet=fx.SAMM_MICRO_CSV)
    assert from_csv == read_annotations(SAMM_LONG, "samm", micro_sheet=SAMM_MICRO)


def _samm_layout(root: Path, *micro_sheets: str) -> Path:
    """``root/SAMMLV/long.xlsx`` with copies of the micro sheet at ``micro_sheets`` (paths under
    ``root``); returns the long-video file."""
    (root / "SAMMLV").mkdir(parents=True)
    long = Path(shutil.copy(SAMM_LONG, root / "SAMMLV" / "long.xlsx"))
    for name in micro_sheets:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMM_MICRO, root / name)
    return long


def test_several_samm_micro_sheets_are_an_error_listing_them(tmp_path):
    """docs/datasets.md: "several found is an error asking for the path". An old release in a
    folder sorting before SAMM/ was taken silently, with its emotions."""
    old, new = tmp_path / "A_old" / "SAMM_Micro_FACS_Codes_v1.xlsx", tmp_path / "SAMM" / "SAMM_Micro_FACS_Codes_v2.xlsx"
    long = _samm_layout(tmp_path, "SAMM/SAMM_Micro_FACS_Codes_v2.xlsx", "A_old/SAMM_Micro_FACS_Codes_v1.xlsx")
    with pytest.raises(AnnotationError) as err:
        read_annotations(long, "samm")
    assert str(err.value) == (f"{long}: several SAMM micro-expression sheets (emotions) in the parent's other folders: "
                              f"{old}, {new}; pass the one to use as micro_sheet= (--micro-sheet)")
    assert read_annotations(long, "samm", micro_sheet=new) == read_annotations(SAMM_LONG, "samm")
    # The nearest place that holds one wins: the long-video file's own folder, then its parent.
    shutil.copy(SAMM_MICRO, beside := tmp_path / "SAMMLV" / "SAMM_Micro_FACS_Codes_v2.csv")
    assert find_samm_micro_sheet(long) == beside
    beside.unlink()
    shutil.copy(SAMM_MICRO, above := tmp_path / "samm_micro_facs.xlsx")
    assert find_samm_micro_sheet(long) == above


def test_samm_micro_sheet_is_found_from_a_relative_path(tmp_path, monkeypatch):
    """``long.xlsx`` given from its own folder: the parent of ``.`` is not ``.``."""
    long = _samm_layout(tmp_path, "SAMM/SAMM_Micro_FACS_Codes_v2.xlsx")
    monkeypatch.chdir(long.parent)
    assert find_samm_micro_sheet("long.xlsx") == tmp_path / "SAMM" / "SAMM_Micro_FACS_Codes_v2.xlsx"
    with pytest.raises(AnnotationError, match=r"^none.xlsx: annotation file not found$"):
        find_samm_micro_sheet("none.xlsx")  # not "no micro-expression sheet"


def test_the_command_line_names_the_micro_sheet_it_found(tmp_path, capsys):
    long = _samm_layout(tmp_path, "SAMM/SAMM_Micro_FACS_Codes_v2.xlsx")
    found = tmp_path / "SAMM" / "SAMM_Micro_FACS_Codes_v2.xlsx"
    assert main(["samm", str(long)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"micro-expression sheet (emotions): {found} (found beside {long}; --micro-sheet to choose)"
    assert main(["samm", str(long), "--micro-sheet", str(found)]) == 0
    assert "micro-expression sheet" not in capsys.readouterr().out  # the user named it
    # The sheet found is an input: --out must not replace it.
    before = found.read_bytes()
    with pytest.raises(UsageError, match=r"would overwrite the micro-expression sheet .*SAMM_Micro_FACS_Codes_v2.xlsx"):
        main(["samm", str(long), "--out", str(found)])
    assert found.read_bytes() == before


def test_a_workbook_without_the_named_sheet_is_read_from_its_first_with_a_warning(tmp_path):
    """A renamed sheet is a guess: the user is told which sheet was read."""
    book = load_workbook(SAMM_LONG)
    book["FACS_Movement_Only"].title = "Movements"
    book.create_sheet("Notes")
    book.save(path := tmp_path / SAMM_LONG.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_annotations(path, "samm", micro_sheet=SAMM_MICRO)
    assert rows == read_annotations(SAMM_LONG, "samm", micro_sheet=SAMM_MICRO)
    assert [str(w.message) for w in caught] == [
        f"{path}: no sheet 'FACS_Movement_Only'; reading the first sheet, 'Movements' (sheets: 'Movements', 'Notes')"]
    export = fx.write_csv(tmp_path / "long.csv", fx.WORKBOOKS[SAMM_LONG]["FACS_Movement_Only"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the named sheet, and a CSV's one sheet, are no guess
        assert read_annotations(export, "samm", micro_sheet=SAMM_MICRO) == rows
        read_annotations(SAMM_LONG, "samm", micro_sheet=SAMM_MICRO)
        read_annotations(CASME3, "casme3")


def test_dispatcher_rejects_unknown_data_set_and_misplaced_micro_sheet():
    with pytest.raises(ValueError, match="unknown data set 'smic'"):
        read_annotations(CASME2, "smic")
    with pytest.raises(ValueError, match="only used with the samm"):
        read_annotations(CASME2, "casme2", micro_sheet=SAMM_MICRO)


# --------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("cell", "value", "row", "reason"),
    [
        ("C3", "abc", 3, "onset 'abc' is not a whole frame number"),
        ("C3", 1200.5, 3, "onset 1200.5 is not a whole frame number"),
        ("C3", "9" * 5000, 3, f"onset '{'9' * 59} is not a whole frame number"),  # (int()'s digit limit: a traceback)
        ("C3", None, 3, "onset is missing"),
        ("C3", 1300, 3, "onset 1300 is after offset 1215"),
        ("D1", 700, 1, "apex 700 is outside onset 557 .. offset 608"),
        ("G4", "angry", 4, "emotion 'angry' is not one of negative, positive, surprise, others"),
        ("H5", "meso-expression", 5, "type 'meso-expression' is not one of micro-expression, macro-expression"),
        ("A2", 9, 2, "participant 9 is not in sheet 'naming rule1'"),
        ("B2", "fear1_1", 2, "name 'fear1_1': stimulus 'fear1' is not in sheet 'naming rule2'"),
        ("E2", 0, 2, None),  # offset 0 is fine (rule); kept here as a control
    ],
)
def test_casme2_bad_row_names_file_row_and_reason(tmp_path, cell, value, row, reason):
    path = edited(CASME2, tmp_path, "CASFEcode_final", cell, value)
    if reason is None:
        assert len(read_annotations(path, "casme2")) == 5
        return
    with pytest.raises(AnnotationError) as err:
        read_annotations(path, "casme2")
    assert str(err.value) == f"{path}, sheet 'CASFEcode_final', row {row}: {reason}"


def test_samm_bad_rows_name_the_row_and_the_micro_sheet(tmp_path):
    long = edited(SAMM_LONG, tmp_path, "FACS_Movement_Only", "H11", "Mezzo")
    where = r"SAMM_LongVideos_V3_Release.xlsx, sheet 'FACS_Movement_Only'"
    with pytest.raises(AnnotationError, match=where + r", row 11: Type 'Mezzo'"):
        read_annotations(long, "samm", micro_sheet=SAMM_MICRO)
    long = edited(SAMM_LONG, tmp_path, "FACS_Movement_Only", "B12", "006_1_9")
    reason = r"micro-expression '006_1_9' is not in the SAMM micro-expression sheet .*SAMM_Micro_FACS_Codes_v2.xlsx"
    with pytest.raises(AnnotationError, match=where + r", row 12: " + reason):
        read_annotations(long, "samm", micro_sheet=SAMM_MICRO)
    micro = edited(SAMM_MICRO, tmp_path, "Sheet1", "J15", "Joy")
    reason = r"Estimated Emotion 'Joy' is not one of .* \(.*SAMM_Micro_FACS_Codes_v2.xlsx, row 15\)"
    with pytest.raises(AnnotationError, match=where + r", row 12: " + reason):
        read_annotations(SAMM_LONG, "samm", micro_sheet=micro)


def test_casme3_bad_frame_names_the_row(tmp_path):
    path = edited(CASME3, tmp_path, "label", "E3", "160")
    with pytest.raises(AnnotationError, match=r"sheet 'label', row 3: onset 166 is after offset 160"):
        read_annotations(path, "casme3")


def test_skip_bad_drops_the_row_with_one_warning(tmp_path):
    path = edited(CASME3, tmp_path, "label", "E3", "160")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_annotations(path, "casme3", skip_bad=True)
    assert len(rows) == len(fx.CASME3_LABEL) - 1
    assert [str(w.message) for w in caught if w.category is AnnotationWarning] == [
        f"{path}, sheet 'label', row 3: onset 166 is after offset 160"
    ]


# --------------------------------------------------------------------------- bad files


def test_missing_sheet_and_missing_column(tmp_path):
    book = load_workbook(CASME2)
    del book["naming rule2"]
    book.save(path := tmp_path / CASME2.name)
    with pytest.raises(AnnotationError, match=r"no sheet 'naming rule2' \(sheets: 'CASFEcode_final', 'naming rule1'\)"):
        read_annotations(path, "casme2")
    path = edited(CASME3, tmp_path, "label", "H1", "feeling")
    with pytest.raises(AnnotationError, match=r"sheet 'label', row 1: header has no column emotion"):
        read_annotations(path, "casme3")
    path = edited(SAMM_LONG, tmp_path, "FACS_Movement_Only", "B10", "Clip")
    with pytest.raises(AnnotationError, match=r"no header row with a 'Filename' column in the first 50 rows"):
        read_annotations(path, "samm", micro_sheet=SAMM_MICRO)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(AnnotationError, match=r"none.xlsx: annotation file not found"):
        read_annotations(tmp_path / "none.xlsx", "casme3")
    (old := tmp_path / "label.xls").write_bytes(b"\xd0\xcf\x11\xe0 old excel")
    with pytest.raises(AnnotationError, match=r"label.xls: old Excel .xls workbooks are not read: save it as .xlsx"):
        read_annotations(old, "casme3")
    (junk := tmp_path / "label.xlsx").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(AnnotationError, match=r"label.xlsx: cannot read as an .xlsx workbook"):
        read_annotations(junk, "casme3")
    with pytest.raises(AnnotationError, match=r"this data set needs the whole .xlsx workbook"):
        read_annotations(fx.SAMM_MICRO_CSV, "casme2")
    (tmp_path / "SAMMLV").mkdir()
    alone = shutil.copy(SAMM_LONG, tmp_path / "SAMMLV" / SAMM_LONG.name)
    with pytest.raises(AnnotationError, match=r"pass micro_sheet="):
        read_annotations(alone, "samm")


# --------------------------------------------------------------------------- frame rates


def test_frame_rates_and_the_data_sets_own_numbering():
    """(Moving frames between rates is :mod:`fgsl.data.video`'s, tested in test_video_and_infer.)"""
    assert DATASET_FPS == {"casme2": 30.0, "casme3": 30.0, "samm": 200.0}
    assert to_dataset_frame(0, "samm") == FIRST_FRAME["samm"] == 1
    assert to_dataset_frame(41, "casme2") == 42


def test_the_annotation_table_is_replaced_whole(tmp_path, monkeypatch):
    """write_table goes through fgsl.files.atomic_write: a failure while replacing it (a full
    disk) leaves the old table readable as it was, never a cut-off table that reads as a
    shorter one."""

    from fgsl.data.table import write_table

    path = tmp_path / "table.csv"
    rows = read_annotations(CASME3, "casme3")
    write_table(rows, path)
    disk_full_when_replacing(monkeypatch, path.name)
    with pytest.raises(OSError, match="No space left on device"):
        write_table(rows[:1], path)
    assert read_table(path) == rows and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_tables_saved_by_excel_or_in_another_encoding(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the table reads as without it. A table
    in another encoding (Latin-1 "Émotion" notes) is one AnnotationError, as fgsl.evaluate says it."""
    from fgsl.data.table import write_table

    rows = read_annotations(CASME3, "casme3")
    plain = write_table(rows, tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_table(bom) == rows
    latin = tmp_path / "latin.csv"
    latin.write_bytes(plain.read_bytes() + "s1,v1,1,2,3,micro,positive,sourire \u00e9\n".encode("latin-1"))
    with pytest.raises(AnnotationError) as err:
        read_table(latin)
    assert str(err.value) == f"{latin}: not a UTF-8 text file"


def test_command_line_summary_and_table(tmp_path, capsys):
    out = tmp_path / "casme3.csv"
    assert main(["casme3", str(CASME3), "--out", str(out)]) == 0
    assert "7 expressions in 6 videos of 5 subjects" in capsys.readouterr().out
    assert read_table(out) == read_annotations(CASME3, "casme3")
    # --out naming the workbook itself would replace it with the CSV.
    book = tmp_path / "book.xlsx"
    book.write_bytes(Path(CASME3).read_bytes())
    with pytest.raises(UsageError, match=r"--out .*book.xlsx would overwrite PATH .*book.xlsx; write it elsewhere"):
        main(["casme3", str(book), "--out", str(book)])
    assert book.read_bytes() == Path(CASME3).read_bytes()


# --------------------------------------------------------------------------- frame sources


def write_frames(folder: Path, frames: list[np.ndarray], name: str = "img{}.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        assert cv2.imwrite(str(folder / name.format(i)), frame)
    return folder


def tiny(value: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def test_frame_folder_reads_the_same_frames_as_the_video(tmp_path):
    path = shared_video("pyfeat_single_face.mp4")
    video = open_source(path)
    frames = list(video)
    assert video.fps == pytest.approx(30.0) and video.count is None and len(frames) == 72
    folder = open_source(write_frames(tmp_path / "rawpic", frames, "img{}.bmp"), fps=video.fps)  # lossless, fast
    assert folder.count == 72 and len(folder.files) == 72
    for a, b in zip(folder, frames, strict=True):
        assert a.dtype == np.uint8 and a.shape == (360, 640, 3)
        assert np.array_equal(a, b)
    shutil.rmtree(folder.path)  # 50 MB of BMP: do not keep it among pytest's last three tmp dirs


def test_frames_sort_by_number_not_by_name(tmp_path):
    write_frames(tmp_path / "samm", [tiny(v) for v in range(12)], "006_1_{:04d}.jpg")
    (tmp_path / "samm" / "006_1_0010.jpg").rename(tmp_path / "samm" / "006_1_10.jpg")  # 10 unpadded
    src = open_source(tmp_path / "samm", fps=DATASET_FPS["samm"])
    assert [p.name for p in src.files][8:11] == ["006_1_0009.jpg", "006_1_10.jpg", "006_1_0011.jpg"]
    assert [int(f.mean()) for f in src] == list(range(12))


@pytest.mark.parametrize(
    ("setup", "fps", "pattern"),
    [
        (lambda d: write_frames(d, [tiny(0)] * 4).joinpath("img3.png").unlink(), 30,
         r"frame 3 is missing \(nothing numbered 3 between img2.png and img4.png\)"),
        (lambda d: [write_frames(d, [tiny(0)] * 2, "img{:03d}.png"), write_frames(d, [tiny(0)])], 30,
         r"frame number 1 appears twice \(img001.png, img1.png\)"),
        (lambda d: (d / "color").mkdir(parents=True), 30,
         r"no image frames .* in this folder; it has subfolders \(color\)"),
        (lambda d: write_frames(d, [tiny(0)], "cover.png"), 30, r"cover.png: no frame number in the file name"),
        (lambda d: write_frames(d, [tiny(0)] * 2), None, r"a folder of frames has no frame rate of its own; pass it with --fps"),
    ],
)
def test_bad_frame_folders_fail_at_open(tmp_path, setup, fps, pattern):
    folder = tmp_path / "video"
    folder.mkdir()
    setup(folder)
    with pytest.raises(VideoError, match=pattern):
        open_source(folder, fps=fps)


def test_bad_frames_fail_when_reached(tmp_path):
    folder = write_frames(tmp_path / "sizes", [tiny(0), tiny(1), tiny(2, (4, 6))])
    with pytest.raises(VideoError, match=r"img3.png: 4x6 image, but the folder's first frame img1.png is 8x6"):
        list(open_source(folder, fps=30))
    folder = write_frames(tmp_path / "broken", [tiny(0), tiny(1)])
    (folder / "img2.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match=r"img2.png: cannot read this image"):
        list(open_source(folder, fps=30))


def test_missing_and_corrupt_video_files(tmp_path):
    with pytest.raises(VideoError, match=r"none.mp4: no such video file or frame folder"):
        open_source(tmp_path / "none.mp4")
    (bad := tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoError, match=r"broken.mp4: (OpenCV cannot open|no decodable frames)"):
        open_source(bad)
    with pytest.raises(VideoError, match=r"fps must be a positive number"):
        open_source(shared_video("pyfeat_single_face.mp4"), fps=0)


def test_a_skipped_row_is_one_warning_line_on_the_command_line(tmp_path, capsys):
    from fgsl.cli import run

    path = edited(CASME3, tmp_path, "label", "E3", "160")
    assert run(main, ["casme3", str(path), "--skip-bad-rows"]) == 0
    err = capsys.readouterr().err
    assert err == f"warning: {path}, sheet 'label', row 3: onset 166 is after offset 160\n"


@pytest.mark.parametrize("reader", ["casme3", "table"])
def test_a_csv_with_an_unclosed_quote_is_one_error_naming_its_row(tmp_path, reader):
    """An unclosed quote makes the csv module read the rest of the file as one field, past its
    131072-character limit: ``_csv.Error`` escaped as a traceback."""
    from fgsl.data.table import read_table

    path = tmp_path / "bad.csv"
    rows = "".join(f"s1,clip{i},{i},{i + 2},{i + 5},micro,positive,\n" for i in range(6000))
    path.write_text("subject,video,onset,apex,offset,type,emotion,aus\n\"s1,clip,1,2,3,micro,positive,\n" + rows)
    with pytest.raises(AnnotationError, match=r"bad\.csv: row \d+: field larger than field limit .* \(an unclosed quote\?\)"):
        read_table(path) if reader == "table" else read_annotations(path, "casme3")


def test_a_video_folder_copied_from_a_mac_lists_its_videos_not_their_appledouble_files(tmp_path, monkeypatch):
    """`fgsl.train --data synthetic=DIR` on a folder from a Mac stopped at `._clip.mp4`
    ("OpenCV cannot open this file as a video"): hidden files are never videos."""
    from fgsl.data import spec

    shutil.copy(SAMPLE_VIDEO, tmp_path / "clip.mp4")
    (tmp_path / "._clip.mp4").write_bytes(b"\x00\x05\x16\x07AppleDouble metadata")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "folder.mp4").mkdir()
    assert spec.video_files(tmp_path) == [tmp_path / "clip.mp4"]
    (tmp_path / "clip.mp4").unlink()
    monkeypatch.setenv("FGSL_FACE_VIDEOS", str(tmp_path))
    with pytest.raises(spec.DataSpecError, match="not a folder of face videos"):
        spec.default_face_videos()
