"""``fgsl.files``: outputs are replaced whole, but never a symbolic link or a device in their place."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from fgsl.files import PendingOutput, atomic_output, atomic_write, unwritable_reason


def test_a_symlinked_output_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "kept" / "results.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "results.csv"
    link.symlink_to(target)
    atomic_write(link, b"new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.csv"]  # no temporary file left


def test_a_dangling_symlink_is_written_through(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "made.csv")
    atomic_write(link, b"x")
    assert link.is_symlink() and (tmp_path / "made.csv").read_bytes() == b"x"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
@pytest.mark.parametrize("through", ["atomic_write", "atomic_output"])
def test_a_named_pipe_is_written_into_not_replaced(tmp_path: Path, through: str) -> None:
    """``--out /dev/stdout`` or a pipe another program reads: the bytes go to the reader, and the
    pipe is still a pipe (replaced, ``/dev/stdout`` would become a file; ``/dev/full``, as root,
    a file where the device was)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()  # (a daemon: left waiting if the pipe were replaced, it cannot hang the run)
    if through == "atomic_write":
        atomic_write(fifo, b"intervals\n")
    else:
        with atomic_output(fifo) as out, open(out, "wb") as f:  # as a library given a path writes it
            f.write(b"intervals\n")
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert received == [b"intervals\n"]


def test_a_full_device_is_one_error_naming_it_and_stays_a_device(tmp_path: Path) -> None:
    """Written into, a ``/dev/full`` fails as a full disk does; it must not be replaced (as root
    its folder is writable: the real ``/dev/full`` once was). A private node of that device."""
    full = tmp_path / "full"
    try:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except (OSError, AttributeError) as exc:
        pytest.skip(f"cannot make a /dev/full node here: {exc}")
    with pytest.raises(OSError) as failed:
        atomic_write(full, b"x" * 65536)
    assert failed.value.filename == str(full) and "No space left" in failed.value.strerror
    assert stat.S_ISCHR(os.stat(full).st_mode)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_folder_where_no_file_can_be_made_is_caught_before_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.access`` says yes to root everywhere, /proc included: the output was refused only
    when written, after the whole run, in an error naming a random temporary file."""
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)  # as root sees it
    assert unwritable_reason("/proc/pred.csv").startswith("no file can be made in /proc: ")
    assert unwritable_reason("/proc/no/such/pred.csv").startswith("no file can be made in /proc: ")
    with pytest.raises(OSError) as failed:
        atomic_write("/proc/pred.csv", b"x")
    assert failed.value.filename == "/proc/pred.csv"


def test_a_writable_folder_is_fine_and_left_as_it_was(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "new" / "pred.csv") is None
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing, and makes no folder


def test_a_pending_output_replaces_its_target_only_when_committed(tmp_path: Path) -> None:
    """``PendingOutput``: the decision comes at the end (``VideoSaver`` keeps a video only of a
    run that tracked a face); until then the old file stays, and a discard leaves no trace."""
    target = tmp_path / "out.mp4"
    target.write_bytes(b"earlier run")
    kept, dropped = PendingOutput(target, suffix=".mp4"), PendingOutput(target, suffix=".mp4")
    assert kept.tmp.parent == tmp_path and kept.tmp.suffix == ".mp4" and kept.tmp != dropped.tmp
    kept.tmp.write_bytes(b"new run")
    dropped.tmp.write_bytes(b"failed run")
    assert target.read_bytes() == b"earlier run"
    dropped.discard()
    dropped.discard()  # safe twice
    assert target.read_bytes() == b"earlier run"
    kept.commit()
    assert target.read_bytes() == b"new run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def test_an_atomic_output_whose_block_fails_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "pred.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["pred.csv"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_pending_output_left_undecided_leaves_no_hidden_file(tmp_path: Path) -> None:
    """A writer that ends on a path that neither commits nor discards (an exception its author
    did not see, Ctrl-C between two lines) leaves no ``.out.mp4.XXXX`` behind."""
    import gc

    pending = PendingOutput(tmp_path / "out.mp4", suffix=".mp4")
    pending.tmp.write_bytes(b"half a video")
    del pending
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_file_identity_finds_one_file_under_any_name_and_tells_files_apart(tmp_path):
    """Links (soft and hard) and ``..`` spellings name one file; a copy is another file; paths
    that do not exist are one file when they resolve alike (an output not written yet)."""
    from fgsl.files import file_identity, same_file

    original = tmp_path / "a.bin"
    original.write_bytes(b"x")
    (tmp_path / "soft").symlink_to(original)
    os.link(original, tmp_path / "hard")
    (tmp_path / "sub").mkdir()
    copy = tmp_path / "copy.bin"
    copy.write_bytes(b"x")
    for other in (tmp_path / "soft", tmp_path / "hard", tmp_path / "sub" / ".." / "a.bin"):
        assert same_file(original, other) and file_identity(original) == file_identity(other), other
    assert not same_file(original, copy)
    assert same_file(tmp_path / "new.csv", tmp_path / "sub" / ".." / "new.csv")
    assert not same_file(tmp_path / "new.csv", tmp_path / "other.csv")
    assert not same_file(tmp_path / "new.bin", original)


@pytest.mark.parametrize("name", ["v" * 251 + ".mp4", "v" + "é" * 125 + ".mp4"], ids=["ascii", "two-byte"])
def test_an_output_whose_name_is_as_long_as_a_name_may_be_is_written(tmp_path: Path, name: str) -> None:
    """A legal 255-byte name: its hidden temporary name (``.NAME.XXXXXXXX.mp4``) was longer
    than the file system takes ("File name too long" at the first frame of ``--save``)."""
    assert len(os.fsencode(name)) == 255
    pending = PendingOutput(tmp_path / name, suffix=".mp4")
    assert len(os.fsencode(pending.tmp.name)) <= 255 and pending.tmp.name.endswith(".mp4")
    pending.tmp.write_bytes(b"video")
    pending.commit()
    assert (tmp_path / name).read_bytes() == b"video"


def test_an_output_that_is_a_symbolic_link_loop_is_refused_and_kept(tmp_path: Path) -> None:
    """``--out l1`` with ``l1 -> l2 -> l1``: the link was replaced by a regular file, exit 0."""
    (tmp_path / "l1").symlink_to("l2")
    (tmp_path / "l2").symlink_to("l1")
    assert unwritable_reason(tmp_path / "l1") == "it is a symbolic link loop"
    with pytest.raises(OSError, match="a symbolic link loop"):
        atomic_write(tmp_path / "l1", b"data")
    assert os.readlink(tmp_path / "l1") == "l2" and os.readlink(tmp_path / "l2") == "l1"


def test_a_read_only_file_system_is_called_so_not_no_permission(tmp_path):
    """EROFS: os.access says "no permission" there, and the user goes looking for a chmod."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        assert unwritable_reason(folder / "e.jsonl") == "a read-only file system"
        assert unwritable_reason(folder / "new" / "e.jsonl") == "a read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert unwritable_reason(folder / "e.jsonl") is None
