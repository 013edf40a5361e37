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

``infer`` equals ``decode_window`` of the chunks' ``encode_chunk`` outputs (tests):
:func:`stream_infer`, with :func:`split_chunks`/:func:`join_chunks` the one NumPy cut and join.

This module stays light (NumPy and the config; torch only inside the functions that pick a
device), so ``engines.trt`` and ``calib`` take the graph names, precisions and :func:`read_onnx` from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fgsl.config import CHUNK_FRAMES, FGSLConfig

#: The three graphs of an FGSL engine (docs/design.md, "Streaming FGSL"), by every backend's name.
GRAPHS = ("model", "encode_chunk", "decode_window")
#: Inputs and outputs of each graph, in order (the names are the contract, docs/design.md "Contracts").
IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "model": (("clips",), ("scores", "offsets")),
    "encode_chunk": (("chunks",), ("final", "taps")),
    "decode_window": (("final", "taps"), ("scores", "offsets")),
}
#: Precisions an engine can have: fp32/fp16 from ``engines.build``, int8/fp8 from ``calib.quantize``.
#: (Here, not in ``engines.export``, so that ``engines.trt`` has them without importing the exporter.)
PRECISIONS = ("fp32", "fp16", "int8", "fp8")


class EngineError(ValueError):
    """An engine that cannot be opened or an input it cannot take (one clear message)."""


def read_onnx(path: str | Path, error: type[Exception] = EngineError) -> Any:
    """The ``onnx.ModelProto`` of the file ``path``, graph only (no external weights), or
    ``error`` (:class:`EngineError`; ``calib`` passes its ``CalibError``) for a file that is
    not ONNX: the one reader of ONNX files for ``engines.trt``, ``engines.export`` and ``calib``.

    Callers read a file once and hand the proto to every check: a realtime-preset export is
    hundreds of megabytes. The format is given (protobuf): ``onnx.load`` otherwise picks it
    from the file's suffix and reads a ``.json`` name as JSON text. Any bytes, an empty file
    included, parse as a protobuf message with no fields, so a model without a single node is
    refused too: it is no export of FGSL. The ``onnx`` package is the caller's to check first
    (``engines.extras.require``), with its install hint, before any work.
    """
    import onnx  # noqa: PLC0415 - optional extra

    from fgsl.cli import explain  # noqa: PLC0415 - torch; this module stays light

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such ONNX file" if not path.exists() else f"{path}: not a file")
    try:
        model = onnx.load(str(path), format="protobuf", load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (protobuf's decode errors have several types)
        raise error(f"{path}: not an ONNX model ({explain(exc)})") from None
    if not len(model.graph.node):
        raise error(f"{path}: not an ONNX model (empty graph)")
    return model


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
        raise EngineError(f"engine device {device!r}: {reason}; use the CPU (--engine-device cpu)")
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


def _check_batch(array: np.ndarray, name: str, frames: int, cfg: FGSLConfig) -> np.ndarray:
    """``array`` as contiguous float32 ``[B, 3, frames, H, W]``, or one :class:`EngineError` line
    naming ``name`` and the shape wanted (what a backend would otherwise say about a bad input
    is its own error, different for each)."""
    if not isinstance(array, np.ndarray):
        raise EngineError(f"{name} must be a numpy array, got {type(array).__name__}")
    want = (3, frames, cfg.image_size, cfg.image_size)
    if array.ndim != 5 or array.shape[1:] != want or array.shape[0] < 1:
        raise EngineError(f"{name} must be [B, {', '.join(map(str, want))}] with B >= 1, got {list(array.shape)}")
    if array.dtype != np.float32:
        raise EngineError(f"{name} must be float32 (ImageNet-normalised), got {array.dtype}")
    return np.ascontiguousarray(array)


def check_clips(clips: np.ndarray, cfg: FGSLConfig) -> np.ndarray:
    """Whole windows for ``infer``: ``[B, 3, T, H, W]`` float32 (:func:`_check_batch`)."""
    return _check_batch(clips, "clips", cfg.window_frames, cfg)


def check_chunks(chunks: np.ndarray, cfg: FGSLConfig) -> np.ndarray:
    """16-frame chunks for ``encode_chunk``: ``[B, 3, 16, H, W]`` float32 (:func:`_check_batch`)."""
    return _check_batch(chunks, "chunks", CHUNK_FRAMES, cfg)


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


# ---------------------------------------------------------------------- streaming path
def split_chunks(clips: np.ndarray) -> tuple[np.ndarray, int]:
    """``[B, C, T, H, W]`` clips -> (``[B * n, C, 16, H, W]`` chunks, ``n = T / 16``).

    Clip by clip, each clip's chunks in time order: what ``encode_chunk`` takes, and the order
    :func:`join_chunks` undoes.
    """
    b, c, t, h, w = clips.shape
    n = t // CHUNK_FRAMES
    chunks = clips.reshape(b, c, n, CHUNK_FRAMES, h, w).transpose(0, 2, 1, 3, 4, 5)
    return np.ascontiguousarray(chunks.reshape(b * n, c, CHUNK_FRAMES, h, w)), n


def join_chunks(final: np.ndarray, taps: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``encode_chunk`` outputs of :func:`split_chunks`'s chunks -> one window's ``decode_window`` inputs.

    ``final [B * n, t, D]`` -> ``[B, n * t, D]`` and ``taps [B * n, n_taps, t, D]`` ->
    ``[B, n_taps, n * t, D]``: the chunks of a window concatenated in time.
    """
    steps, count = final.shape[1], taps.shape[1]
    b = len(final) // n
    joined = final.reshape(b, n * steps, -1)
    tapped = taps.reshape(b, n, count, steps, -1).transpose(0, 2, 1, 3, 4).reshape(b, count, n * steps, -1)
    return np.ascontiguousarray(joined), np.ascontiguousarray(tapped)


def stream_infer(engine: Engine, clips: np.ndarray) -> dict[str, np.ndarray]:
    """``decode_window`` of the ``encode_chunk`` outputs of ``clips``: the live spotter's cached
    path run over whole clips. It equals ``engine.infer(clips)`` (the self-test and
    ``engines.build`` check that), so an engine with only the streaming pair infers with it."""
    chunks, n = split_chunks(clips)
    enc = engine.encode_chunk(chunks)
    return engine.decode_window(*join_chunks(enc["final"], enc["taps"], n))
