"""Weights folders: ``model.safetensors`` + ``config.json``, validated on load.

A weights folder is what training writes and what engines, offline inference and the live
spotter read. The safetensors header carries ``format=fgsl`` and whether the weights were
trained; random weights (for benchmarks) are refused unless the caller allows them.
Nothing is ever unpickled here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import tensorfile
from .tensorfile import tensor_digest  # (re-exported: engines.export names fgsl.weights.tensor_digest)
from .config import ConfigError, FGSLConfig
from .files import atomic_write
from .messages import first_line
from .model import FGSL, build
from .statedict import mismatch

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"  # fgsl.train's full training state, for --resume
FORMAT = "fgsl"


class WeightsError(ValueError):
    """A weights folder that cannot be used (the message names the file and the reason)."""


class UntrainedWeights(WeightsError):
    """Weights saved as untrained (random), refused unless the caller allows them."""


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors as written to disk: detached, contiguous, on the CPU."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def model_digest(model: torch.nn.Module) -> str:
    """The :func:`tensor_digest` of a model in memory: the value :func:`save` stores for it, so
    it also identifies a loaded folder, an exported engine's source weights and (in DDP) one
    rank's weights. One function for all of them, so the three can be compared."""
    return tensor_digest(cpu_state(model))


def save(model: FGSL, folder: str | Path, *, trained: bool, info: dict[str, Any] | None = None,
         score_threshold: float | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if needed).

    ``info`` (for example the training data's name and metrics) is stored as JSON in the
    safetensors header and in ``config.json`` under nothing else: the config stays a pure
    network description. ``score_threshold`` (chosen on validation data) replaces the
    model config's in ``config.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = cpu_state(model)
    meta = {
        "format": FORMAT,
        "trained": "true" if trained else "false",
        "info": json.dumps(info or {}),
        "sha256": tensor_digest(state),
    }
    tensorfile.write(state, folder / WEIGHTS_FILE, meta)
    cfg = model.cfg if score_threshold is None else model.cfg.replace(score_threshold=score_threshold)
    # Atomic too: a crash between the two files must not leave new weights beside a cut-off
    # config.json (load would fail, or build another network and refuse the weights).
    atomic_write(folder / CONFIG_FILE, (cfg.to_json() + "\n").encode())
    return folder


def read_metadata(folder: str | Path) -> dict[str, str]:
    """The safetensors header of a weights folder (refuses files that are not FGSL weights)."""
    return tensorfile.read(Path(folder) / WEIGHTS_FILE, WeightsError, FORMAT, "FGSL weights file", tensors=False)[0]


def load(folder: str | Path, *, allow_untrained: bool = False, device: str | torch.device = "cpu") -> FGSL:
    """Rebuild the network from ``folder`` and load its weights, refusing any mismatch."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a weights folder (expected {WEIGHTS_FILE} and {CONFIG_FILE} inside)")
    absent = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if absent:
        raise WeightsError(f"{folder}: not a weights folder (missing {' and '.join(absent)})")
    try:
        cfg = FGSLConfig.load(folder / CONFIG_FILE)
    except ConfigError as exc:
        raise WeightsError(str(exc)) from None
    path = folder / WEIGHTS_FILE
    meta, stored = tensorfile.read(path, WeightsError, FORMAT, "FGSL weights file")
    if meta.get("trained") != "true" and not allow_untrained:
        raise UntrainedWeights(
            f"{folder / WEIGHTS_FILE}: these are untrained (random) weights; their outputs mean nothing. "
            "Train with `python -m fgsl.train`, or pass --allow-untrained for benchmarks"
        )
    try:
        model = build(cfg, seed=None)
    except (RuntimeError, MemoryError, SystemError, OverflowError, ValueError) as exc:
        # A config.json edited by hand past what its checks bound (neck_dim 2**20: torch cannot
        # allocate it; pretrain_image_size under the patch size): its own line, not torch's traceback.
        raise WeightsError(f"{folder / CONFIG_FILE}: describes a network that cannot be built ({first_line(exc)})") from None
    expected = model.state_dict()
    problems = mismatch(stored, expected, limit=8)
    if problems:
        raise WeightsError(f"{path}: does not match {CONFIG_FILE} ({'; '.join(problems)})")
    if meta.get("sha256") != tensor_digest(stored):
        raise WeightsError(f"{path}: corrupt (tensor checksum does not match the one written at save time)")
    model.load_state_dict(stored, strict=True)
    return model.to(device).eval()


def is_trained(folder: str | Path) -> bool:
    """Whether the folder's weights were saved as trained, from the header alone (no tensors
    are read): callers that only label their output need not load the network."""
    return read_metadata(folder).get("trained") == "true"


def info(folder: str | Path) -> dict[str, Any]:
    """The ``info`` dict stored at save time (training data, metrics)."""
    raw = read_metadata(folder).get("info", "{}")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {}
