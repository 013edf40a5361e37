"""``--data`` specs and subject splits."""

import numpy as np
import pytest

from fgsl.config import preset
from fgsl.data.spec import DataSpecError, find_video, load_annotated, load_item, parse, split_subjects
from fgsl.data.synthetic import write_video
from fgsl.data.table import Annotation, AnnotationError, write_table
from fgsl.data.video import resample_indices
from tests.conftest import shared_video


def test_parse_specs():
    assert parse("synthetic") == ("synthetic", None)
    assert parse("synthetic=/videos") == ("synthetic", "/videos")
    assert parse("casme2=/a/b.xlsx") == ("casme2", "/a/b.xlsx")
    with pytest.raises(DataSpecError, match="needs a file"):
        parse("samm")
    with pytest.raises(DataSpecError, match="kind must be one of"):
        parse("kinetics=/x")
    for spec in ("synthetic=", "casme2="):  # (`synthetic=$VIDEOS`, VIDEOS unset: it trained on the shared videos)
        with pytest.raises(DataSpecError, match=rf"^--data '{spec}': nothing after '=' \(an unset shell variable\?\)$"):
            parse(spec)


def test_subject_splits():
    subjects = ["s3", "s1", "s2", "s1"]
    assert split_subjects(subjects, None) == {"s1"}
    assert split_subjects(subjects, "loso:2") == {"s3"}
    assert split_subjects(subjects, "subjects:s2,s3") == {"s2", "s3"}
    for bad, words in [("loso:9", "fold must be in 0..2"), ("loso:x", "fold number"), ("subjects:s9", "unknown subjects"),
                       ("random", "use loso:K")]:
        with pytest.raises(DataSpecError, match=words):
            split_subjects(subjects, bad)
    with pytest.raises(DataSpecError, match="at least two subjects"):
        split_subjects(["only"], None)


def test_find_video_looks_in_subject_folders_and_any_extension(tmp_path):
    (tmp_path / "s1").mkdir()
    clip = tmp_path / "s1" / "clip.avi"
    clip.write_bytes(b"")
    frames = tmp_path / "s2" / "clip2"
    frames.mkdir(parents=True)
    assert find_video(tmp_path, "s1", "clip") == clip
    assert find_video(tmp_path, "s2", "clip2") == frames
    with pytest.raises(DataSpecError, match="video s3/nope not found"):
        find_video(tmp_path, "s3", "nope")



def test_find_video_takes_the_data_sets_own_folder_names(tmp_path):
    """CAS(ME)^2 names its folders with the stimulus word after the table's video
    (``rawpic/s15/15_0401girlcrashing``); CAS(ME)^3 keeps frames in ``spNO.1/a/color``."""
    rawpic = tmp_path / "rawpic"
    for name in ("15_0401girlcrashing", "15_04012other", "15_0502a"):
        (rawpic / "s15" / name).mkdir(parents=True)
    assert find_video(rawpic, "s15", "15_0401") == rawpic / "s15" / "15_0401girlcrashing"  # not 15_04012...
    rawvideo = tmp_path / "rawvideo" / "s15"
    rawvideo.mkdir(parents=True)
    (rawvideo / "15_0401girlcrashing.avi").write_bytes(b"")
    (rawvideo / "15_0401girlcrashing.txt").write_bytes(b"")
    assert find_video(tmp_path / "rawvideo", "s15", "15_0401") == rawvideo / "15_0401girlcrashing.avi"
    (rawpic / "s15" / "15_0502b").mkdir()
    with pytest.raises(DataSpecError, match=r"video 15_0502: 2 candidates .*\(15_0502a, 15_0502b\); rename all but one"):
        find_video(rawpic, "s15", "15_0502")
    for kind in ("color", "depth"):
        (tmp_path / "casme3" / "spNO.1" / "a" / kind).mkdir(parents=True)
    assert find_video(tmp_path / "casme3", "spNO.1", "a") == tmp_path / "casme3" / "spNO.1" / "a" / "color"
    # An exact name wins over a longer one, wherever it is.
    (tmp_path / "exact" / "s1" / "v1extra").mkdir(parents=True)
    (tmp_path / "exact" / "v1").mkdir()
    assert find_video(tmp_path / "exact", "s1", "v1") == tmp_path / "exact" / "v1"

def test_table_data_is_split_by_subject_and_moved_to_model_frames(tmp_path):
    cfg = preset("tiny")
    for subject in ("a", "b"):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "face.mp4").write_bytes(shared_video("pyfeat_single_face.mp4").read_bytes())
    rows = [Annotation("a", "face", 10, 12, 16, "micro", "positive"), Annotation("b", "face", 30, 31, 33, "micro", "surprise")]
    write_table(rows, tmp_path / "gt.csv")
    data = load_annotated(cfg, "table", tmp_path / "gt.csv", tmp_path, "subjects:b")
    assert [i.subject for i in data.train] == ["a"] and [i.subject for i in data.held_out] == ["b"]
    assert data.train[0].events == [(10, 12, 16, cfg.classes.index("positive"))]
    assert data.held_out_truth == rows[1:]
    assert data.train[0].frames.shape == (72, 32, 32, 3)


def test_validation_subjects_come_from_the_training_subjects(tmp_path):
    cfg = preset("tiny")
    rows = []
    for n, subject in enumerate(("a", "b", "c", "d")):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "face.mp4").write_bytes(shared_video("pyfeat_single_face.mp4").read_bytes())
        rows.append(Annotation(subject, "face", 10 + n, 12 + n, 16 + n, "micro", "positive"))
    write_table(rows, tmp_path / "gt.csv")

    def split(val):
        data = load_annotated(cfg, "table", tmp_path / "gt.csv", tmp_path, "subjects:b", val=val)
        return ([i.subject for i in data.train], [i.subject for i in data.val], [i.subject for i in data.held_out],
                [r.subject for r in data.val_truth])

    assert split("auto") == (["c", "d"], ["a"], ["b"], ["a"])  # the first remaining subject
    assert split("subjects:d") == (["a", "c"], ["d"], ["b"], ["d"])
    assert split("loso:1") == (["a", "d"], ["c"], ["b"], ["c"])  # folds count the remaining subjects
    assert split("none") == (["a", "c", "d"], [], ["b"], [])
    with pytest.raises(DataSpecError, match="leaves no training subject"):
        split("subjects:a,c,d")
    # Errors name the flag given: they used to say --split for a bad --val.
    for val, words in [("subjects:b", "--val 'subjects:b': b is already held out for testing by --split; choose among "
                                      "a, c, d"),  # the test subject cannot validate, and the line says why
                       ("subjects:z", "--val 'subjects:z': unknown subjects ['z']; known: a, c, d"),
                       ("loso:7", "--val 'loso:7': fold must be in 0..2"), ("bogus", "--val 'bogus': use loso:K")]:
        with pytest.raises(DataSpecError) as refused:
            split(val)
        assert str(refused.value).startswith(words)


def test_one_video_file_under_two_subjects_is_refused_before_reading(tmp_path, monkeypatch):
    """Found through the ROOT/VIDEO fallback for both: trained on as one subject and scored as
    the other's held-out test, without a word."""
    import fgsl.data.spec as spec_mod

    (tmp_path / "face.mp4").write_bytes(shared_video("pyfeat_single_face.mp4").read_bytes())
    write_table([Annotation("s1", "face", 10, 12, 16, "micro", "positive"),
                 Annotation("s3", "face", 30, 31, 33, "micro", "surprise")], tmp_path / "gt.csv")
    monkeypatch.setattr(spec_mod, "load_item", lambda *a, **k: pytest.fail("a video was read"))
    with pytest.raises(DataSpecError, match=rf"gt\.csv: s1/face and s3/face are one video file \({tmp_path / 'face.mp4'}\)"):
        load_annotated(preset("tiny"), "table", tmp_path / "gt.csv", tmp_path, "subjects:s3")


def test_a_row_past_the_end_of_its_video_is_refused(tmp_path):
    """Such an event never fits in a window: it would silently drop training windows instead."""
    cfg = preset("tiny")
    video = shared_video("pyfeat_single_face.mp4")  # 72 frames
    late = Annotation("a", "face", 60, 65, 9999, "micro", "positive")
    with pytest.raises(AnnotationError, match=rf"gt.csv: row a/face onset 60, apex 65, offset 9999 ends past the end "
                                              rf"of {video} \(frames 0-71\)"):
        load_item(cfg, "a", "face", video, [late], table=tmp_path / "gt.csv")
    last = Annotation("a", "face", 60, 65, 71, "micro", "positive")
    assert load_item(cfg, "a", "face", video, [last]).events == [(60, 65, 71, cfg.classes.index("positive"))]


def test_events_at_the_last_frame_stay_in_the_video_at_another_frame_rate(tmp_path):
    """25 fps -> the model's 30 fps: frame 9 of 10 rounds to model frame 11, one past the last (10)."""
    path = tmp_path / "clip.avi"
    write_video(path, np.zeros((10, 32, 32, 3), np.uint8), 25)
    item = load_item(preset("tiny"), "a", "clip", path, [Annotation("a", "clip", 5, 7, 9, "micro", "surprise")])
    assert len(item.frames) == 11 and item.events[0][2] == 10


def test_targets_round_ties_half_up_as_documented(tmp_path):
    """SAMM's 200 fps at the model's 30: frame 30 is model frame 4.5 and frame 50 is 7.5.
    docs/datasets.md rounds half up (5 and 8); Python's round made the onset 4, not 5. The
    target is the model frame that shows the annotated frame or, on a tie, the later one."""
    path = tmp_path / "samm.avi"
    write_video(path, np.zeros((60, 32, 32, 3), np.uint8), 200)
    row = Annotation("006", "006_1", 30, 36, 50, "micro", "negative")
    item = load_item(preset("tiny"), "006", "006_1", path, [row], fps=200)
    assert len(item.frames) == 9 and item.events[0][:3] == (5, 5, 8)
    # Source frame 30 lies halfway between model frames 4 and 5 (source frames 26.7 and 33.3, shown as 27 and 33).
    assert resample_indices(60, 200, 30).tolist() == [0, 7, 13, 20, 27, 33, 40, 47, 53]


def test_a_given_rate_overrides_a_video_files_header_as_in_fgsl_infer(tmp_path):
    """A data set's rate (or tune's --fps) wins over a wrong container rate, as ``fgsl.infer --fps``
    does: the same video must land on the same model frames in tuning and in inference."""
    path = tmp_path / "clip.avi"
    write_video(path, np.zeros((20, 32, 32, 3), np.uint8), 25)
    row = Annotation("a", "clip", 10, 12, 14, "micro", "surprise")
    assert load_item(preset("tiny"), "a", "clip", path, [row]).source_fps == 25
    item = load_item(preset("tiny"), "a", "clip", path, [row], fps=15)
    assert item.source_fps == 15 and len(item.frames) == 39 and item.events[0][:3] == (20, 24, 28)


def test_default_face_videos_for_synthetic_data(tmp_path, monkeypatch):
    from fgsl.data import spec

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FGSL_FACE_VIDEOS", str(empty))
    with pytest.raises(DataSpecError, match=r"^\$FGSL_FACE_VIDEOS=.*empty: not a folder of face videos$"):
        spec.default_face_videos()
    (empty / "face.AVI").write_bytes(b"")  # any video suffix, any case, as synthetic=DIR takes
    assert spec.default_face_videos() == empty
    # No variable and no ../shared/data: the bundled sample, with a warning saying so.
    monkeypatch.delenv("FGSL_FACE_VIDEOS")
    checkout = tmp_path / "checkout"
    (checkout / "samples").mkdir(parents=True)
    (checkout / "samples" / "sample.mp4").write_bytes(b"")
    monkeypatch.setattr(spec, "ROOT", checkout)
    with pytest.warns(UserWarning, match="synthetic data from the bundled sample only"):
        assert spec.default_face_videos() == checkout / "samples"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "talk.mp4").write_bytes(b"")
    assert spec.default_face_videos() == tmp_path / "shared" / "data"
