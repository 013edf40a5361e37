"""Writing files: checked before anything is written, and replaced whole, never half.

:func:`unwritable_reason` says why a path cannot be written without touching anything, so a
command can check all its outputs before it opens (and truncates) the first one.

Every product file (weights, checkpoints, exported engines, manifests, caches) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, which then
replaces the target with :func:`os.replace` (atomic on POSIX and Windows). Temporary files
are created private (``mkstemp``: mode 0600), so the result is given the mode a plain
``open()`` would have (``0666`` less the umask): a weights file someone else on the machine
or a serving container must read should not come out unreadable to them.

Two kinds of path are not replaced: a symbolic link (its target is replaced and the link
kept, as a plain ``open()`` would write through it), and a device, pipe or socket
(``/dev/stdout``, a named pipe, ``/dev/full``), which is written into: replacing it would
put a regular file where ``/dev/stdout`` was, and as root destroy the device.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    """The process umask, read once at import: Linux reports it in /proc; elsewhere the only
    way is to set it and put it back, which must not happen while other threads create files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
#: What a plain ``open()`` would give a new file here.
FILE_MODE = 0o666 & ~_UMASK
#: What a plain ``mkdir`` would give a new folder here (``tempfile.mkdtemp`` gives 0700).
DIR_MODE = 0o777 & ~_UMASK


def atomic_write(path: str | Path, write: Callable[[Any], None] | bytes) -> Path:
    """Write ``path`` through a temporary file in the same folder and :func:`os.replace` it.

    ``write`` is the bytes to write or a function that writes into a binary file object.
    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        if isinstance(write, (bytes, bytearray, memoryview)):
            f.write(write)
        else:
            write(f)
        f.flush()
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # (a pipe or terminal cannot be synced)
            os.fsync(f.fileno())
    return Path(path)


#: The longest file name most file systems take (ext4, XFS, btrfs, tmpfs: NAME_MAX, bytes).
NAME_MAX = 255
#: The characters ``mkstemp`` adds between prefix and suffix.
_RANDOM_CHARS = 8


def name_cut_for(name: str, added: int) -> str:
    """``name`` cut (whole characters) to leave ``added`` bytes of a :data:`NAME_MAX` name
    for what a hidden sibling adds around it (a dot, a random part, a suffix): a legal
    250-byte ``--save`` or ``--out`` name failed with "File name too long"."""
    return os.fsencode(name)[:max(NAME_MAX - added, 1)].decode(errors="ignore")


def _temporary_prefix(name: str, suffix: str) -> str:
    """``.NAME.`` for ``mkstemp``, NAME cut so the temporary name fits where ``name`` fits."""
    return "." + name_cut_for(name, _RANDOM_CHARS + len(os.fsencode(suffix)) + 2) + "."


class PendingOutput:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit` or goes away on
    :meth:`discard`: for a writer that decides only at its end whether its file may replace
    the old one (``realtime.overlay.VideoSaver`` keeps a video only of a run that tracked a
    face and read back whole). :func:`atomic_output` is the same with the decision made by
    whether its block raised. A device, pipe or socket is written into: :attr:`tmp` is the
    path itself and both ends do nothing (see the module's note)."""

    def __init__(self, path: str | Path, suffix: str = ".tmp") -> None:
        path = Path(path)
        self.path = path
        self._special = is_special_file(path)
        if self._special:
            self.tmp = path
            return
        if path.is_symlink():
            if _link_loop(path):  # (realpath would name a file inside the loop, replacing the link by it)
                raise OSError(errno.ELOOP, "a symbolic link loop", str(path))
            self.path = Path(os.path.realpath(path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _naming(exc, self.path) from None
        try:
            fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(self.path.name, suffix), suffix=suffix,
                                       dir=self.path.parent)
        except OSError as exc:  # mkstemp names the random temporary file, which means nothing to the user
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        os.close(fd)
        self.tmp = Path(tmp)
        # A writer that ends without either (an exception on a path its author did not see, a
        # Ctrl-C between two lines) leaves no hidden file: removed when this object goes, or at exit.
        self._remove = weakref.finalize(self, self.tmp.unlink, missing_ok=True)

    def commit(self) -> None:
        """Give the file a plain file's mode and put it in place of :attr:`path`."""
        if self._special:
            return
        try:
            os.chmod(self.tmp, FILE_MODE)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise _naming(exc, self.path, str(self.tmp)) from None
        self._remove.detach()

    def discard(self) -> None:
        """Remove the temporary file, leaving :attr:`path` as it was (safe to call twice)."""
        if not self._special:
            self._remove()


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a library that writes files itself (ONNX Runtime's
    and ModelOpt's quantisers take an output path, not bytes); on success it gets a plain
    file's mode and replaces ``path``, on failure it is removed. ``suffix``: for libraries that
    look at the name. A device, pipe or socket is yielded itself (see the module's note)."""
    pending = PendingOutput(path, suffix)
    try:
        yield pending.tmp
    except OSError as exc:
        pending.discard()
        raise _naming(exc, pending.path, str(pending.tmp)) from None
    except BaseException:
        pending.discard()
        raise
    pending.commit()


def is_special_file(path: str | Path) -> bool:
    """Whether ``path`` (through links) is a device, pipe or socket: written into, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _naming(exc: OSError, path: Path, tmp: str | None = None) -> OSError:
    """``exc`` naming ``path`` where it names no file (a write or flush on a full disk) or the
    hidden temporary one, which means nothing to the user; other errors as they are."""
    if exc.strerror and exc.filename in (None, tmp):
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


def _link_loop(path: Path) -> bool:
    """Whether the symbolic link ``path`` leads into a loop (a dangling link does not: it is
    written through, making the file it names)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def unwritable_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be written as a file (its missing folders would be made), or None.

    Changes nothing, so every output can be checked before any is opened (opening truncates).
    The folder is probed with a nameless temporary file: ``os.access`` says yes to root
    everywhere, even in ``/proc``, where the write would fail only after the work.
    """
    path = Path(path)
    if path.is_symlink() and _link_loop(path):
        return "it is a symbolic link loop"
    if path.is_dir():
        return "it is a folder"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if _read_only_mount(folder):  # (os.access says "no permission" there, which sends one to chmod)
        return "a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "no permission"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"no file can be made in {folder}: {exc.strerror or exc}"
    return None


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (no statvfs: not POSIX)
        return False


def file_identity(path: str | Path) -> tuple[object, ...]:
    """What names one file whatever the path: its device and inode where it exists (links and,
    where the file system ignores it, case included), else its resolved path. A key for
    finding the same file among many paths at once (:func:`fgsl.cli.refuse_given_twice`)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        try:
            return ("path", str(path.resolve()))
        except (OSError, RuntimeError):  # a symbolic-link loop (RuntimeError before Python 3.13)
            return ("path", os.path.abspath(path))
    return ("inode", info.st_dev, info.st_ino)


def given_twice(noun: str, paths: Sequence[str | Path], why: str) -> str | None:
    """The line that refuses one file given twice among ``paths`` (under one name or two: a
    link, another spelling): ``NOUN PATH is given twice: WHY`` or ``NOUNs A and B are one
    file: WHY``; ``None`` when each is another file. For commands whose outputs are named
    after each input (``fgsl.infer``'s CSV rows, ``fgsl.data.synthetic``'s subjects), where a
    file twice would count its intervals twice or make one face two subjects; raised by
    :func:`fgsl.cli.refuse_given_twice` (this module does not load torch, as fgsl.cli does)."""
    first: dict[tuple[object, ...], int] = {}
    for index, path in enumerate(paths):
        at = first.setdefault(file_identity(path), index)
        if at == index:
            continue
        earlier = paths[at]
        what = (f"{noun} {path} is given twice" if str(earlier) == str(path) else
                f"{noun}s {earlier} and {path} are one file")
        return f"{what}: {why}"
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (:func:`file_identity`): an output that is one of the
    command's inputs would destroy it."""
    return file_identity(a) == file_identity(b)


#: The most characters a CSV table is read to (64 Mi: a million rows; a MEGC table of a whole
#: data set is a few hundred kB).
MAX_TABLE_CHARS = 64 * 2**20


class TableTooLarge(ValueError):
    """A "CSV" longer than :data:`MAX_TABLE_CHARS`: not a table (``/dev/zero``, a log)."""


def read_table_text(path: Path) -> str:
    """The whole text of a CSV table: UTF-8, an Excel byte-order mark dropped ("CSV UTF-8"
    starts with one, which would read as part of the first column's name), line ends kept
    for the csv module. Read whole, so a file in another encoding fails here, wherever its
    first bad byte is; read to :data:`MAX_TABLE_CHARS` at most, so a device or stream that
    never ends (``--pred /dev/zero``) is :class:`TableTooLarge`, not a process that fills
    the memory until the kernel kills it."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        text = f.read(MAX_TABLE_CHARS + 1)
    if len(text) > MAX_TABLE_CHARS:
        raise TableTooLarge(f"{path}: longer than {MAX_TABLE_CHARS:,} characters: not an annotation table")
    return text
