"""Cache folders of entry files: what they hold, when each was last used, pruning, and the
show/prune command the two caches share (``python -m engines.cache`` for compiled engines,
``python -m fgsl.data.crop_cache`` for aligned face crops).

Why shared: both caches are a folder of files named ``*<suffix>``, written atomically
(:func:`fgsl.files.atomic_write`, whose temporary files are ``.<entry>.<random>.tmp``), marked
as used by their modification time on each hit (:func:`touch`), and never emptied on their
own; the user sees and prunes each the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_command", "entries", "prune", "touch"]


def touch(path: Path) -> None:
    """Mark an entry as used now (its mtime), so ``--older-than`` prunes entries no one opens.
    An entry that is a symbolic link (put there by hand) is marked itself, not its target:
    :func:`prune` deletes the link, and judges and counts it, by the link's own times."""
    try:
        os.utime(path, follow_symlinks=False)
    except OSError:  # a read-only cache still serves its entries
        pass


def entries(root: Path, suffix: str) -> list[Path]:
    """The cache's files: entries (``*<suffix>``) and the temporary files a killed writer left
    (``.<entry>.*.tmp``); nothing else in the folder."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and (p.name.endswith(suffix) or (
        p.name.startswith(".") and f"{suffix}." in p.name and p.name.endswith(".tmp"))))


def prune(root: Path, suffix: str, older_than_days: float | None = None) -> int:
    """Delete the cache's files (all, or those not used for ``older_than_days``); returns the
    bytes freed. Nothing else in the folder is touched; a deleted entry is made again on its
    next use."""
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    freed = 0
    for path in entries(root, suffix):
        try:
            info = path.lstat()  # (a link's own size and time: the link is what unlink deletes)
        except FileNotFoundError:  # a writer's temporary file, renamed (or another prune) meanwhile
            continue
        if cutoff is None or info.st_mtime < cutoff:
            path.unlink(missing_ok=True)
            freed += info.st_size
    return freed


def cache_command(argv: list[str] | None, *, prog: str, noun: str, suffix: str, default_dir: Callable[[], Path],
                  dir_help: str, filled_by: str) -> int:
    """The ``python -m <prog>`` command of one cache: list its files (size, last use), or
    delete all of them (``--clear``) or those not used for ``--older-than DAYS``.
    ``noun``: "engine cache"; ``filled_by``: what adds entries, for the help and an empty cache."""
    from fgsl.cli import ArgumentParser, HelpFormatter, UsageError, non_negative_number, run

    parser = ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                            description=f"Show the {noun} (what it holds, how big), or prune it. Entries are never "
                                        f"removed on their own: they are made {filled_by}.")
    parser.add_argument("--dir", help=f"cache folder (default: {dir_help})")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--clear", action="store_true", help="delete every entry (each is made again on its next use)")
    which.add_argument("--older-than", type=non_negative_number, metavar="DAYS",
                       help="delete the entries not used for DAYS days")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        root = Path(args.dir) if args.dir else default_dir()
        if root.exists() and not root.is_dir():
            raise UsageError(f"--dir {root}: not a folder")
        if not root.exists():
            print(f"{root}: no {noun} yet (its entries are made {filled_by})")
            return 0
        if args.clear or args.older_than is not None:
            before = len(entries(root, suffix))
            freed = prune(root, suffix, args.older_than)
            left = len(entries(root, suffix))
            print(f"{root}: deleted {before - left} file(s), {freed / 1e6:.1f} MB ({left} remain; a deleted entry "
                  "is made again on its next use)")
            return 0
        files = entries(root, suffix)
        print(f"{root}: {len(files)} file(s), {sum(p.lstat().st_size for p in files) / 1e6:.1f} MB")
        for path in files:
            info = path.lstat()
            age = (time.time() - info.st_mtime) / 86400
            print(f"  {info.st_size / 1e6:8.1f} MB  used {age:5.1f} days ago  {path.name}")
        return 0

    return run(body)
