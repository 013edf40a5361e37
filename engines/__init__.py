"""FGSL inference engines behind one call: ``engines.open(path, backend="auto")``.

A *path* is a weights folder (``model.safetensors`` + ``config.json``). ``backend="auto"``
picks the best backend available for that path; today that is the torch backend, which is
also the reference every other backend is checked against. Engines never import realtime
code.
"""

from __future__ import annotations

from pathlib import Path

from fgsl.cli import register_user_error

from .base import Engine, EngineError, check_clips

BACKENDS = ("torch",)

register_user_error(EngineError)


def open(  # noqa: A001 - the documented entry point mirrors the builtin's shape on purpose
    path: str | Path,
    backend: str = "auto",
    *,
    device: str = "cpu",
    allow_untrained: bool = False,
) -> Engine:
    """Open an FGSL engine for ``path``; raises :class:`EngineError` with a clear reason."""
    if backend not in ("auto", *BACKENDS):
        raise EngineError(
            f"unknown backend {backend!r}; available here: {', '.join(BACKENDS)} "
            "(onnxruntime and tensorrt arrive with the engines issue)"
        )
    path = Path(path)
    if not path.exists():
        raise EngineError(f"{path}: no such weights folder")
    if not path.is_dir():
        raise EngineError(f"{path}: the torch backend reads a weights folder (model.safetensors + config.json)")
    from .torch_backend import TorchEngine

    return TorchEngine.from_folder(path, device=device, allow_untrained=allow_untrained)


__all__ = ["BACKENDS", "Engine", "EngineError", "check_clips", "open"]
