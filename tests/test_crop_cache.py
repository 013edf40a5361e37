"""The aligned-crop cache (fgsl.data.crop_cache): each video aligned once; real videos, real MediaPipe."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import fgsl.data.aligned
from fgsl.data import crop_cache
from fgsl.data.aligned import read_aligned_crops
from fgsl.data.frames import open_source
from fgsl.data.synthetic import write_video
from fgsl.data.table import Annotation, write_table
from tests.conftest import TWO_CPU_RANKS, shared_video

SAMPLE = shared_video("pyfeat_single_face.mp4")


@pytest.fixture(scope="module")
def sample_frames() -> np.ndarray:
    """The sample's 72 BGR frames (640x360)."""
    return np.stack(list(open_source(SAMPLE)))


def entries() -> list[Path]:
    return sorted(crop_cache.default_dir().glob(f"*{crop_cache.SUFFIX}"))


def forbid_aligning(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, aligning a video fails the test: what is read must come from the cache."""
    def aligned_faces(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the video was aligned again")

    monkeypatch.setattr(fgsl.data.aligned, "aligned_faces", aligned_faces)


def test_a_video_is_aligned_once_and_read_back_with_its_warnings(tmp_path, sample_frames, monkeypatch):
    frames = sample_frames.copy()
    frames[:3] = 128  # no face in the first three frames: the reading has a warning to say
    write_video(tmp_path / "gap.avi", frames, 30.0)
    said = r"gap\.avi: the face is not found in 3 of the 72 frames read"
    with pytest.warns(UserWarning, match=said):
        first = read_aligned_crops(tmp_path / "gap.avi", 32)
    assert len(entries()) == 1
    forbid_aligning(monkeypatch)
    with pytest.warns(UserWarning, match=said):
        again = read_aligned_crops(tmp_path / "gap.avi", 32)
    assert np.array_equal(again.frames, first.frames) and again.fps == first.fps == 30.0
    # Named by another path, the video is the same entry, and the warning names the path given.
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"^gap\.avi: the face is not found"):
        assert np.array_equal(read_aligned_crops("gap.avi", 32).frames, first.frames)
    assert len(entries()) == 1


def test_only_the_distinct_crops_are_stored(tmp_path, sample_frames):
    """A 60 fps video read for a 30 fps model: half its frames are aligned, and the entry holds
    those (each other frame repeats one), yet reads back as the whole video."""
    write_video(tmp_path / "fast.avi", sample_frames, 60.0)
    video = read_aligned_crops(tmp_path / "fast.avi", 32, model_fps=30)
    (entry,) = entries()
    stored = crop_cache.entry_for(open_source(tmp_path / "fast.avi"), 32, 30).load()
    assert entry == crop_cache.entry_for(open_source(tmp_path / "fast.avi"), 32, 30).path
    assert stored.crops.shape == (36, 32, 32, 3) and len(stored.index) == 72
    assert np.array_equal(stored.crops[stored.index], video.frames)


def test_another_size_rate_or_content_is_another_entry(tmp_path, sample_frames, monkeypatch):
    """What the crops depend on misses the cache: the model's size and rate, and a video
    changed in place (here one frame of a frame folder)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(sample_frames[:24]):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), frame)
    small = read_aligned_crops(folder, 32, fps=30)
    read_aligned_crops(folder, 48, fps=30)
    read_aligned_crops(folder, 32, fps=30, model_fps=15)
    assert len(entries()) == 3
    cv2.imwrite(str(folder / "img010.png"), np.ascontiguousarray(sample_frames[50]))  # one frame replaced
    changed = read_aligned_crops(folder, 32, fps=30)
    assert len(entries()) == 4
    assert np.array_equal(changed.frames, read_aligned_crops(folder, 32, fps=30, cache=False).frames)
    assert not np.array_equal(changed.frames[10], small.frames[10])
    assert np.array_equal(changed.frames[:10], small.frames[:10])


def test_the_same_video_and_reading_named_otherwise_is_the_same_entry(tmp_path, sample_frames, monkeypatch):
    """A symbolic link to a video is the video; a model at or above the source's rate is
    shown every frame, as with no rate at all."""
    write_video(tmp_path / "face.avi", sample_frames[:24], 30.0)
    first = read_aligned_crops(tmp_path / "face.avi", 32)
    (tmp_path / "link.avi").symlink_to(tmp_path / "face.avi")
    forbid_aligning(monkeypatch)
    for path, model_fps in ((tmp_path / "link.avi", None), (tmp_path / "face.avi", 30), (tmp_path / "face.avi", 60.0)):
        assert np.array_equal(read_aligned_crops(path, 32, model_fps=model_fps).frames, first.frames)
    assert len(entries()) == 1


def test_the_trackers_crop_size_is_part_of_the_key(tmp_path, sample_frames, monkeypatch):
    """The tracker's crop (ALIGNED_CROP, the synthetic recipe's size) changes the crops."""
    write_video(tmp_path / "face.avi", sample_frames[:12], 30.0)
    source = open_source(tmp_path / "face.avi")
    before = crop_cache.entry_for(source, 32, None).path
    monkeypatch.setattr(fgsl.data.aligned, "ALIGNED_CROP", 48)
    assert crop_cache.entry_for(source, 32, None).path != before


def test_a_cut_off_video_is_said_so_also_when_read_from_the_cache(tmp_path, monkeypatch):
    """Decoding that stops short of the container's count is a warning of the reading (the
    file is damaged): a cached reading says it again, not a shorter video without a word."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg program to move the video's index to the front")
    whole = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE), "-c", "copy", "-movflags", "+faststart",
                    str(whole)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for reading in ("fresh", "cached"):
        with pytest.warns(UserWarning, match=r"cut\.mp4: decoding stopped at frame \d+ of 72 \(damaged or truncated"):
            video = read_aligned_crops(cut, 32)
        assert 0 < video.count < 72, reading
        forbid_aligning(monkeypatch)  # the second reading is the entry's
    assert len(entries()) == 1


def test_an_entry_is_named_within_the_limits_of_a_file_name(tmp_path, sample_frames):
    long = tmp_path / ("顔" * 80 + ".avi")  # 244 bytes: with a key and a suffix, too long for a file name
    write_video(long, sample_frames[:12], 30.0)
    read_aligned_crops(long, 32)
    (entry,) = entries()
    assert len(entry.name.encode()) <= 255 and entry.name.startswith("顔")
    assert crop_cache.default_dir().stat().st_mode & 0o777 == 0o700  # faces: a private folder
    # A frame folder may have a name that is not UTF-8 (its images are read without OpenCV's video reader).
    folder = tmp_path / os.fsdecode(b"frames\xff")
    folder.mkdir()
    for i, frame in enumerate(sample_frames[:6]):
        cv2.imwrite(str(tmp_path / "frame.png"), frame)
        (folder / f"img{i}.png").write_bytes((tmp_path / "frame.png").read_bytes())
    assert read_aligned_crops(folder, 32, fps=30).count == 6
    assert sorted(p.name[:7] for p in entries()) == ["frames-", "顔顔顔顔顔顔顔"]


def test_fgsl_crop_cache_off_reads_without_the_cache(tmp_path, sample_frames, monkeypatch, capsys):
    write_video(tmp_path / "face.avi", sample_frames[:12], 30.0)
    monkeypatch.setenv("FGSL_CROP_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # where the cache would otherwise be
    read_aligned_crops(tmp_path / "face.avi", 32)
    assert not (tmp_path / "xdg").exists()
    assert crop_cache.main([]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "(FGSL_CROP_CACHE=off: readings do not use the cache; this is where it would be)",
        f"{tmp_path / 'xdg' / 'fgsl' / 'crops'}: no aligned-crop cache yet (its entries are made as fgsl.train, "
        "fgsl.infer and fgsl.tune read videos as aligned face crops)"]


FILE_SIZE_LIMIT = """
import resource, sys
from fgsl.data.aligned import read_aligned_crops

resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # a full disk or a quota, for this process's writes
video = read_aligned_crops(sys.argv[1], 32)
print(video.count)
"""


@pytest.mark.parametrize("value", ["off", "OFF", " Off "])
def test_fgsl_crop_cache_off_is_read_in_any_case(monkeypatch, value):
    """``FGSL_CROP_CACHE=OFF`` made a folder called OFF in the current folder."""
    monkeypatch.setenv("FGSL_CROP_CACHE", value)
    assert not crop_cache.enabled() and crop_cache.default_dir().name == "crops"


def test_a_full_disk_while_storing_is_one_warning_and_the_reading_goes_on(tmp_path, sample_frames):
    """safetensors reports a write that fails (ENOSPC, EDQUOT, EFBIG) as its own error, not an
    OSError: it once ended the reading with a traceback, the video's alignment lost."""
    write_video(tmp_path / "face.avi", sample_frames[:24], 30.0)
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path / "face.avi")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "24", done.stderr
    assert "Traceback" not in done.stderr
    assert f"aligned-crop cache {crop_cache.default_dir()}: cannot write (" in done.stderr
    assert "File too large" in done.stderr and entries() == []


def test_clearing_a_folder_that_is_not_the_cache_keeps_its_weights(tmp_path, capsys):
    """A weights folder given as --dir by mistake: its safetensors files are not entries."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "checkpoint.safetensors", ".model.safetensors.x1.tmp"):
        (run / name).write_bytes(b"weights")
    assert crop_cache.main(["--dir", str(run), "--clear"]) == 0
    assert "deleted 0 file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == [".model.safetensors.x1.tmp", "checkpoint.safetensors",
                                                     "model.safetensors"]


def damaged(whole: bytes, damage: str) -> bytes:
    """An entry's bytes cut short, not ours (its header overwritten), or with one bit flipped
    in the middle (the crops, which safetensors does not check)."""
    middle = len(whole) // 2
    return {"cut short": whole[:middle], "not ours": b"\0" * 64 + whole[64:],
            "a flipped bit": whole[:middle] + bytes([whole[middle] ^ 1]) + whole[middle + 1:]}[damage]


@pytest.mark.parametrize("damage", ["cut short", "not ours", "a flipped bit"])
def test_a_damaged_entry_is_aligned_again_and_replaced(damage, tmp_path, sample_frames):
    write_video(tmp_path / "face.avi", sample_frames[:24], 30.0)
    first = read_aligned_crops(tmp_path / "face.avi", 32)
    (entry,) = entries()
    whole = entry.read_bytes()
    entry.write_bytes(damaged(whole, damage))
    again = read_aligned_crops(tmp_path / "face.avi", 32)
    assert np.array_equal(again.frames, first.frames)
    replaced = crop_cache.entry_for(open_source(tmp_path / "face.avi"), 32, None).load()  # a whole entry again
    assert replaced is not None and np.array_equal(replaced.crops[replaced.index], first.frames)
    assert len(entry.read_bytes()) == len(whole)  # (the header's metadata order may differ)


def test_an_unwritable_cache_is_said_once_and_reading_goes_on(tmp_path, sample_frames, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FGSL_CROP_CACHE", str(blocker / "crops"))
    monkeypatch.setattr(crop_cache, "_unwritable", set())
    write_video(tmp_path / "a.avi", sample_frames[:12], 30.0)
    write_video(tmp_path / "b.avi", sample_frames[12:24], 30.0)
    with pytest.warns(UserWarning) as said:
        a = read_aligned_crops(tmp_path / "a.avi", 32)
        b = read_aligned_crops(tmp_path / "b.avi", 32)
    cache_lines = [str(w.message) for w in said if "aligned-crop cache" in str(w.message)]
    assert cache_lines == [f"aligned-crop cache {blocker / 'crops'}: cannot write (Not a directory); videos are "
                           "aligned again on each reading (set FGSL_CROP_CACHE to a writable folder, or to off)"]
    assert np.array_equal(a.frames, read_aligned_crops(tmp_path / "a.avi", 32, cache=False).frames)
    assert a.count == b.count == 12


def test_the_cache_command_lists_and_prunes_by_last_use(tmp_path, sample_frames, capsys):
    """Entries are never removed on their own; ``python -m fgsl.data.crop_cache`` shows and
    prunes them, and reading an entry counts as use (``--older-than`` keeps what is read)."""
    import time

    write_video(tmp_path / "face.avi", sample_frames[:12], 30.0)
    for size in (32, 48):
        read_aligned_crops(tmp_path / "face.avi", size)
    root = crop_cache.default_dir()
    old, used = (crop_cache.entry_for(open_source(tmp_path / "face.avi"), size, None).path for size in (32, 48))
    (root / f".{old.name}.abc.tmp").write_bytes(b"left by a killed writer")
    (root / "notes.txt").write_text("not the cache's")
    month_ago = time.time() - 30 * 86400
    for path in (old, used, root / f".{old.name}.abc.tmp"):
        os.utime(path, (month_ago, month_ago))
    read_aligned_crops(tmp_path / "face.avi", 48)  # read from the cache: used now
    assert crop_cache.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{root}: 3 file(s)") and old.name in out and "used  30.0 days ago" in out
    assert crop_cache.main(["--older-than", "7"]) == 0
    assert "deleted 2 file(s)" in capsys.readouterr().out  # the old entry and the leftover temporary file
    assert not old.exists() and used.exists() and (root / "notes.txt").exists()
    assert crop_cache.main(["--clear"]) == 0
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert crop_cache.main(["--dir", str(root / "notes.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --dir {root / 'notes.txt'}: not a folder"


def test_without_the_cache_nothing_is_stored(tmp_path, sample_frames):
    write_video(tmp_path / "face.avi", sample_frames[:12], 30.0)
    read_aligned_crops(tmp_path / "face.avi", 32, cache=False)
    assert entries() == []


MAIN_FIRST = """
import json, sys, time
from fgsl.train import Dist

env = Dist()

def work():
    start = time.time()
    if sys.argv[2] == "fail" and env.main:
        raise ValueError("rank 0's work failed")
    time.sleep(1.0)
    return [env.rank, start, time.time()]

try:
    times = env.main_first(work) + [time.time()]
except Exception as exc:
    times = [env.rank, type(exc).__name__, str(exc)]
with open(sys.argv[1] + f".{env.rank}", "w") as f:
    json.dump(times, f)
env.close()
"""


def main_first(tmp_path: Path, mode: str) -> list[list]:
    """Run MAIN_FIRST on two ranks; what each rank wrote."""
    import json

    script = tmp_path / "main_first.py"
    script.write_text(MAIN_FIRST)
    subprocess.run([*TWO_CPU_RANKS,
                    str(script), str(tmp_path / "times"), mode], capture_output=True, text=True, timeout=300)
    return [json.loads((tmp_path / f"times.{rank}").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_under_torchrun_rank_0_does_the_work_first_and_every_rank_waits_for_all(tmp_path):
    """Dist.main_first: the other ranks start only once rank 0 has finished (so they read its
    cache entries instead of aligning every video at the same time), and rank 0 goes on only
    once they have (not into a barrier whose timeout their work may pass)."""
    (main, main_start, main_end, main_back), (other, other_start, other_end, _) = main_first(tmp_path, "ok")
    assert (main, other) == (0, 1)
    assert other_start >= main_end > main_start
    assert main_back >= other_end


@pytest.mark.slow
def test_under_torchrun_a_failing_rank_0_stops_the_others_at_once(tmp_path):
    (main, main_error, _), (other, other_error, message) = main_first(tmp_path, "fail")
    assert (main, main_error) == (0, "ValueError")
    assert (other, other_error, message) == (1, "RankStopped", "rank 1: rank 0 failed (its error is above); stopping")


#: fgsl.train with aligning refused on every rank but 0: the others must read rank 0's entries.
RANK_0_ALIGNS = """
import os, runpy, sys
import fgsl.data.aligned

if os.environ["RANK"] != "0":
    def refuse(*args, **kwargs):
        raise AssertionError(f"rank {os.environ['RANK']} aligned a video")
    fgsl.data.aligned.aligned_faces = refuse
sys.argv[0] = "fgsl.train"
runpy.run_module("fgsl.train", run_name="__main__")
"""


def train_aligned(tmp_path: Path, launcher: tuple[str, ...]) -> subprocess.CompletedProcess:
    """fgsl.train --align-faces (tiny, one epoch) under ``launcher`` on two subjects' copies of
    the two-faces video, aligning refused on every rank but 0."""
    two_faces = shared_video("liveportrait_d18_d19_two_faces_sidebyside.mp4")
    frames = np.stack(list(open_source(two_faces)))[:48]
    for subject in ("a", "b"):
        (tmp_path / "videos" / subject).mkdir(parents=True)
        write_video(tmp_path / "videos" / subject / "face.avi", frames, 30.0)
    write_table([Annotation("a", "face", 10, 12, 16, "micro", "positive"),
                 Annotation("b", "face", 30, 31, 33, "micro", "surprise")], tmp_path / "gt.csv")
    script = tmp_path / "train_rank_0_aligns.py"
    script.write_text(RANK_0_ALIGNS)
    return subprocess.run([*launcher, str(script), "--preset", "tiny", "--data", f"table={tmp_path / 'gt.csv'}",
                           "--video-root", str(tmp_path / "videos"), "--split", "subjects:b", "--val", "none",
                           "--batch", "2", "--epochs", "1", "--quiet", "--align-faces", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_aligned_training_under_torchrun_aligns_and_warns_once(tmp_path):
    """fgsl.train --align-faces on two ranks: rank 0 aligns each video into the cache and says
    what it finds; the other rank reads the entries (aligning fails there) quietly (one
    warning per video, not two)."""
    done = train_aligned(tmp_path, TWO_CPU_RANKS)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("up to 2 faces in view") == 2, done.stderr
    assert len(entries()) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_aligned_training_under_torchrun_on_one_gpu(tmp_path):
    """The same launcher with one rank on ``cuda:0``: training on the GPU from the aligned
    crops the cache holds. (One rank starts no process group, so neither NCCL nor
    ``Dist.main_first``'s polling runs: that needs two GPUs.)"""
    done = train_aligned(tmp_path, (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
                                    "--standalone"))
    assert done.returncode == 0, done.stderr
    assert "device cuda:0, 1 process(es)" in done.stderr, done.stderr
    assert done.stderr.count("up to 2 faces in view") == 2, done.stderr
    assert len(entries()) == 2
