"""Engine cache: compiled FGSL graphs stored on disk under a key, written atomically, checked on load.

Why a cache: exporting ONNX takes seconds and building a TensorRT engine minutes; the live
spotter should pay that once per (weights, precision, shapes, backend version, device), not at
every start. Why the checks: an engine file is opaque bytes that a runtime trusts. A file cut
short by a crash or a full disk, a file that is not ours, or an engine built for another
shape, backend version or GPU must never be handed to a runtime: it is detected here and
rebuilt (when the caller can rebuild) or refused with one clear message.

Layout
------
One *entry* per (backend, graph, precision, FIFM form, weights): a single file
``<backend>-<graph>-<precision>-<slot>.fgsl-engine`` in the cache folder, where ``slot``
hashes what the entry *is* (weights digest, backend, graph, precision, form). The *key*
hashes everything the payload *depends on* besides that (input shapes, opset, backend and
exporter versions, device). Because shapes and versions are not part of the file name, an
entry built for another window size or an older runtime sits at the same path and is
detected as stale, then replaced, instead of piling up beside the current one.

File format (version 1)::

    b"FGSLENGINE\\0" | uint32 little-endian header length | header JSON (utf-8) | payload

The header holds ``key`` (the fields), ``key_sha256``, ``payload_bytes`` and
``payload_sha256``; a reader rejects a wrong magic or unreadable header (*foreign*), a short
payload (*truncated*), a payload whose hash differs (*corrupt*) and a key that differs from
the one asked for (*stale*).

Writes go to a temporary file in the same folder, are flushed and fsynced, then moved over
the entry with :func:`os.replace` (atomic on POSIX and Windows), so a reader sees the old
complete entry or the new complete entry, never a partial one.

Fallback messages: :func:`say_once` prints each distinct reason once per process on stderr,
so a live loop that reopens engines does not repeat it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from fgsl import cache_files
    from fgsl.cli import error_line
    from fgsl.files import atomic_write

    from .base import EngineError

MAGIC = b"FGSLENGINE\0"
FORMAT_VERSION = 1
SUFFIX = ".fgsl-engine"
#: Largest header we accept: a key is a few hundred bytes; anything huge is not our file.
MAX_HEADER = 1 << 20

_said: set[str] = set()


def say_once(message: str) -> bool:
    """Print ``engines: <message>`` on stderr the first time this process says it; True if printed."""
    if message in _said:
        return False
    _said.add(message)
    print(f"engines: {message}", file=sys.stderr, flush=True)
    return True


class CacheError(EngineError):
    """A cached engine file that must not be used; ``kind`` is foreign, truncated, corrupt or stale."""

    def __init__(self, path: Path, kind: str, detail: str) -> None:
        super().__init__(f"{path}: {kind} engine file ({detail})")
        self.path = path
        self.kind = kind


def default_dir() -> Path:
    """``$FGSL_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/fgsl/engines``, else ``~/.cache/fgsl/engines``."""
    if os.environ.get("FGSL_ENGINE_CACHE"):
        return Path(os.environ["FGSL_ENGINE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fgsl" / "engines"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def canonical_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 of ``fields`` as sorted, compact JSON: equal dicts give equal hashes."""
    return sha256_bytes(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())


def device_fingerprint(device: str = "cpu") -> dict[str, Any]:
    """What a compiled engine may depend on about the device.

    CPU: the architecture (ONNX graphs are portable; the field keeps ARM and x86 caches
    apart). CUDA: GPU name and compute capability from torch where torch sees the GPU
    (TensorRT engines are specific to both); ``name: unknown`` otherwise, which still keeps
    CUDA entries apart from CPU ones.
    """
    if device == "cpu":
        return {"type": "cpu", "arch": platform.machine()}
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    info: dict[str, Any] = {"type": "cuda", "index": index, "name": "unknown"}
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            info["name"] = torch.cuda.get_device_name(index)
            info["capability"] = list(torch.cuda.get_device_capability(index))
    except Exception as exc:  # a broken CUDA install must not hide the cache: key on what we know
        info["error"] = type(exc).__name__
    return info


def write_entry(path: str | Path, key: Mapping[str, Any], payload: bytes, meta: Mapping[str, Any] | None = None) -> Path:
    """Store ``payload`` under ``key`` at ``path`` (atomically)."""
    header = json.dumps({
        "version": FORMAT_VERSION,
        "key": dict(key),
        "key_sha256": canonical_hash(key),
        "payload_bytes": len(payload),
        "payload_sha256": sha256_bytes(payload),
        "meta": dict(meta or {}),
    }, sort_keys=True).encode()

    def write(f: Any) -> None:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(header)))
        f.write(header)
        f.write(payload)

    return atomic_write(path, write)


def read_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """(header, payload offset) of an entry, or :class:`CacheError` (foreign/truncated)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if not MAGIC.startswith(head[: len(MAGIC)]):
            raise CacheError(path, "foreign", "not an FGSL engine cache file")
        if len(head) < len(MAGIC) + 4:
            raise CacheError(path, "truncated", f"{len(head)} bytes, shorter than the file header")
        (size,) = struct.unpack("<I", head[len(MAGIC):])
        if size > MAX_HEADER:
            raise CacheError(path, "foreign", f"header of {size} bytes")
        raw = f.read(size)
    if len(raw) < size:
        raise CacheError(path, "truncated", "the header is cut short")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CacheError(path, "foreign", "unreadable header") from None
    if not isinstance(header, dict) or header.get("version") != FORMAT_VERSION:
        raise CacheError(path, "foreign", f"unknown cache format version {header.get('version') if isinstance(header, dict) else '?'}")
    if not isinstance(header.get("key"), dict):  # (read_entry names the key's fields that differ)
        raise CacheError(path, "foreign", "the header holds no key")
    return header, len(MAGIC) + 4 + size


def read_entry(path: str | Path, key: Mapping[str, Any] | None = None) -> tuple[bytes, dict[str, Any]]:
    """(payload, header) of a complete, intact entry whose key equals ``key`` (when given)."""
    path = Path(path)
    header, offset = read_header(path)
    if key is not None and header.get("key_sha256") != canonical_hash(key):
        stored = header["key"]
        changed = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
        raise CacheError(path, "stale", f"built for another {', '.join(changed) or 'key'}")
    with open(path, "rb") as f:
        f.seek(offset)
        payload = f.read()
    want = header.get("payload_bytes")
    if len(payload) != want:
        kind = "truncated" if isinstance(want, int) and len(payload) < want else "corrupt"
        raise CacheError(path, kind, f"payload is {len(payload)} bytes, header says {want}")
    if sha256_bytes(payload) != header.get("payload_sha256"):
        raise CacheError(path, "corrupt", "payload checksum does not match")
    return payload, header


@dataclass
class EngineCache:
    """A folder of engine entries; :meth:`get_or_build` is the one call backends need."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> "EngineCache":
        return cls(Path(root) if root is not None else default_dir())

    def path_for(self, identity: Mapping[str, Any]) -> Path:
        """Entry path for ``identity`` (needs ``backend``, ``graph``, ``precision``)."""
        slot = canonical_hash(identity)[:24]
        return self.root / f"{identity['backend']}-{identity['graph']}-{identity['precision']}-{slot}{SUFFIX}"

    def get_or_build(
        self,
        identity: Mapping[str, Any],
        key: Mapping[str, Any],
        build: Callable[[], bytes],
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[bytes, Path]:
        """The cached payload for ``identity``/``key``, building and storing it when absent or unusable.

        A foreign, truncated, corrupt or stale entry is reported once (why it is rebuilt)
        and replaced atomically. A cache folder that cannot be written (read-only, under
        ``/proc``, a file in the way) costs the cache, not the run: the payload is used
        uncached, said once (the returned path then holds no entry of it).
        """
        path = self.path_for(identity)
        if path.exists():
            try:
                payload, _ = read_entry(path, key)
                cache_files.touch(path)
                return payload, path
            except CacheError as exc:
                say_once(f"{exc}; rebuilding it")
        payload = build()
        try:
            write_entry(path, key, payload, meta)
        except OSError as exc:
            say_once(f"the engine cache {self.root} cannot be written ({error_line(exc)}); running without it "
                     "(set $FGSL_ENGINE_CACHE to a writable folder to keep compiled graphs)")
        return payload, path


def entries(root: Path) -> list[Path]:
    """The cache's files: entries and temporary files a killed writer left (``.<entry>.*.tmp``)."""
    return cache_files.entries(root, SUFFIX)


def prune(root: Path, older_than_days: float | None = None) -> int:
    """Delete the cache's files (all, or those not used for ``older_than_days``); returns the
    bytes freed. Nothing else in the folder is touched; a deleted entry is rebuilt on its next use."""
    return cache_files.prune(root, SUFFIX, older_than_days)


def main(argv: list[str] | None = None) -> int:
    return cache_files.cache_command(
        argv, prog="python -m engines.cache", noun="engine cache", suffix=SUFFIX, default_dir=default_dir,
        dir_help="$FGSL_ENGINE_CACHE, else $XDG_CACHE_HOME/fgsl/engines, else ~/.cache/fgsl/engines",
        filled_by="for every weights file opened with onnxruntime or tensorrt")


if __name__ == "__main__":
    quiet_exit(main())
