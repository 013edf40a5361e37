"""Reading and writing safetensors files the one way the project does it.

Every weights-like file here (FGSL weights, converted backbones, training checkpoints) is
safetensors with a ``format`` tag in its header, written atomically and read back with
one clear error for a missing, truncated, corrupt or foreign file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .files import atomic_write


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes and bytes of all tensors: detects flipped bytes on disk,
    which the safetensors format itself does not."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].contiguous()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write atomically (:func:`fgsl.files.atomic_write`): a crash mid-write leaves the
    previous file intact and no temporary file behind."""
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, data)


def read(path: str | Path, error: type[Exception], fmt: str, what: str,
         tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header metadata, tensors) of ``path``; ``error`` for anything unusable.

    ``fmt`` is the expected ``format`` tag and ``what`` names the kind of file in messages
    (e.g. "training checkpoint").
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except FileNotFoundError:
        raise error(f"{path}: not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"{path}: corrupt or not a safetensors file ({exc})") from None
    if meta.get("format") != fmt:
        raise error(f"{path}: not a {what} (header format={meta.get('format')!r})")
    return meta, data
