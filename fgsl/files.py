"""Writing a file so that readers see the old one or the whole new one, never half of it.

Every product file (weights, checkpoints, exported engines, manifests, caches) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, which then
replaces the target with :func:`os.replace` (atomic on POSIX and Windows). Temporary files
are created private (``mkstemp``: mode 0600), so the result is given the mode a plain
``open()`` would have (``0666`` less the umask): a weights file someone else on the machine
or a serving container must read should not come out unreadable to them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[Any], None] | bytes) -> Path:
    """Write ``path`` through a temporary file in the same folder and :func:`os.replace` it.

    ``write`` is the bytes to write or a function that writes into a binary file object.
    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, (bytes, bytearray, memoryview)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
