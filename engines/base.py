"""The Engine protocol every backend implements (torch, ONNX Runtime, TensorRT).

``infer(clips)`` takes float32 ``[B, 3, T, H, W]`` clips normalised with ImageNet mean/std
and returns ``{"scores": [B, N, K] logits, "offsets": [B, N, 2]}`` as NumPy arrays, the same
for every backend, so the live spotter and offline inference never care which one runs.

Streaming (docs/design.md, "Streaming FGSL"): the same model as two graphs, so the live spotter can
encode each 16-frame chunk once and reuse it in every window that contains it:

* ``encode_chunk(chunks [B, 3, 16, H, W])`` -> ``{"final": [B, t, D], "taps": [B, n_taps, t, D]}``
  (the frozen encoder: ``t`` = 16 / tubelet steps per chunk);
* ``decode_window(final [B, L, D], taps [B, n_taps, L, D])`` -> ``{"scores", "offsets"}`` with
  ``L = t * T / 16`` (the chunks of a window concatenated in time).

``infer`` equals ``decode_window`` of the chunks' ``encode_chunk`` outputs (tests).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from fgsl.config import CHUNK_FRAMES, FGSLConfig


class EngineError(ValueError):
    """An engine that cannot be opened or an input it cannot take (one clear message)."""


def add_engine_device_flag(parser: Any) -> None:
    """``--engine-device`` (default ``auto``), the same in every CLI that opens an engine."""
    parser.add_argument("--engine-device", default="auto",
                        help="where the FGSL engine runs: auto (a CUDA GPU when torch sees one, else the CPU), "
                             "cpu, cuda or cuda:N (default: %(default)s)")


def cuda_missing_reason() -> str | None:
    """Why torch cannot run on a GPU here (a CPU-only build, or no visible device), or None."""
    import torch  # noqa: PLC0415 - torch is only needed once a device is chosen

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return "no CUDA device is visible (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)"


def resolve_device(device: str) -> str:
    """The device an engine runs on, checked: ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` is ``cuda`` where torch sees a GPU and ``cpu`` elsewhere, so the same command
    uses the GPU of a GPU machine and still runs on a laptop. Asking for a GPU that is not
    there is one :class:`EngineError` line, not torch's "not compiled with CUDA" traceback.
    """
    import torch  # noqa: PLC0415

    if device == "auto":
        return "cpu" if cuda_missing_reason() else "cuda"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EngineError(f"unknown engine device {device!r}; choose auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise EngineError(f"unknown engine device {device!r}; choose auto, cpu, cuda or cuda:N")
    reason = cuda_missing_reason()
    if reason:
        raise EngineError(f"engine device {device!r}: {reason}; use --engine-device cpu")
    if dev.index is not None and not 0 <= dev.index < torch.cuda.device_count():
        raise EngineError(f"CUDA device {dev.index} does not exist ({torch.cuda.device_count()} visible)")
    return str(dev)


@runtime_checkable
class Engine(Protocol):
    cfg: FGSLConfig

    def infer(self, clips: np.ndarray) -> dict[str, np.ndarray]: ...

    def encode_chunk(self, chunks: np.ndarray) -> dict[str, np.ndarray]: ...

    def decode_window(self, final: np.ndarray, taps: np.ndarray) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


def check_clips(clips: np.ndarray, cfg: FGSLConfig) -> np.ndarray:
    """Validate and return ``clips`` as contiguous float32, or raise :class:`EngineError`."""
    if not isinstance(clips, np.ndarray):
        raise EngineError(f"clips must be a numpy array, got {type(clips).__name__}")
    want = (3, cfg.window_frames, cfg.image_size, cfg.image_size)
    if clips.ndim != 5 or clips.shape[1:] != want or clips.shape[0] < 1:
        raise EngineError(f"clips must be [B, {', '.join(map(str, want))}] with B >= 1, got {list(clips.shape)}")
    if clips.dtype != np.float32:
        raise EngineError(f"clips must be float32 (ImageNet-normalised), got {clips.dtype}")
    return np.ascontiguousarray(clips)


def check_chunks(chunks: np.ndarray, cfg: FGSLConfig) -> np.ndarray:
    """Validate ``[B, 3, 16, H, W]`` float32 chunks, or raise :class:`EngineError`."""
    if not isinstance(chunks, np.ndarray):
        raise EngineError(f"chunks must be a numpy array, got {type(chunks).__name__}")
    want = (3, CHUNK_FRAMES, cfg.image_size, cfg.image_size)
    if chunks.ndim != 5 or chunks.shape[1:] != want or chunks.shape[0] < 1:
        raise EngineError(f"chunks must be [B, {', '.join(map(str, want))}] with B >= 1, got {list(chunks.shape)}")
    if chunks.dtype != np.float32:
        raise EngineError(f"chunks must be float32 (ImageNet-normalised), got {chunks.dtype}")
    return np.ascontiguousarray(chunks)


def check_features(final: np.ndarray, taps: np.ndarray, cfg: FGSLConfig) -> tuple[np.ndarray, np.ndarray]:
    """Validate a window of cached chunk features for ``decode_window``."""
    length = cfg.tokens
    for name, array, rank in (("final", final, 3), ("taps", taps, 4)):
        if not isinstance(array, np.ndarray) or array.ndim != rank or array.dtype != np.float32:
            raise EngineError(f"{name} must be a float32 array of rank {rank}")
    if final.shape[1] != length or taps.shape[2] != length or taps.shape[0] != final.shape[0] \
            or taps.shape[3] != final.shape[2]:
        raise EngineError(f"window features must be final [B, {length}, D] and taps [B, n_taps, {length}, D], "
                          f"got {list(final.shape)} and {list(taps.shape)}")
    return np.ascontiguousarray(final), np.ascontiguousarray(taps)
