"""Training checkpoints in safetensors: model, EMA, optimiser, step count and the rest, no pickles.

``torch.save`` checkpoints are pickles, and loading a pickle runs code; the project loads
weights only from safetensors. A training state is a tree of dicts and lists whose leaves
are tensors or plain JSON values, so it is stored as flat tensors (keys are paths like
``optimizer/state/3/exp_avg``) plus one JSON skeleton in the header that records where
each tensor goes and every non-tensor value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fgsl import tensorfile

FORMAT = "fgsl-train-state"
_TENSOR = "__tensor__"


class CheckpointStateError(ValueError):
    """A training checkpoint that cannot be resumed from (the message says why)."""


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(value, dict):
        # JSON keys are strings: remember int keys (optimizer state is keyed by index).
        return {"__dict__": [[k, _flatten(v, f"{path}/{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__list__": [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path} in a checkpoint")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if _TENSOR in node:
            return tensors[node[_TENSOR]]
        if "__dict__" in node:
            return {k: _unflatten(v, tensors) for k, v in node["__dict__"]}
        if "__list__" in node:
            return [_unflatten(v, tensors) for v in node["__list__"]]
    return node


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically (a crash mid-write leaves the previous checkpoint intact)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "state", tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tensorfile.write(tensors, path, {"format": FORMAT, "skeleton": json.dumps(skeleton),
                                     "sha256": tensorfile.tensor_digest(tensors)})


def load_state(path: str | Path) -> dict[str, Any]:
    """The state :func:`save_state` wrote; flipped bits on disk are :class:`CheckpointStateError`
    (its SHA-256, as weights files keep: safetensors checks only the header and the length;
    resumed from them, a run went on with damaged weights or optimiser moments and blamed
    the learning rate when it diverged). Checkpoints written before the checksum load as they are."""
    meta, tensors = tensorfile.read(path, CheckpointStateError, FORMAT, "training checkpoint")
    if "sha256" in meta and meta["sha256"] != tensorfile.tensor_digest(tensors):
        raise CheckpointStateError(f"{path}: corrupt (tensor checksum does not match the one written at save time)")
    return _unflatten(json.loads(meta["skeleton"]), tensors)
