"""Optional packages of the engines and of ``calib``: one probe and one install hint per extra.

ONNX Runtime, TensorRT, onnxconverter-common, ModelOpt and tritonclient are optional
(``pyproject.toml`` extras), so every command that needs one checks for it first and says what
to install in one ``error:`` line. Every such check goes through :func:`require`, which is
:func:`fgsl.cli.missing_module`: it *imports* the module, so a package that is installed but
broken (one of its own dependencies missing) is told apart from a missing one, and every
command words it the same way (``<who> needs <package>: <hint>``).
"""

from __future__ import annotations

from collections.abc import Iterable

from fgsl.cli import missing_module

from .base import EngineError

#: ``onnx`` extra: onnx, onnxruntime and onnxconverter-common.
ONNX_HINT = "pip install 'fgsl-spotter[onnx]'"
#: ``trt`` extra: TensorRT, which only runs with an NVIDIA GPU.
TRT_HINT = "install the 'trt' extra (pip install 'fgsl-spotter[trt]') on a machine with an NVIDIA GPU and driver"
#: ``calib`` extra: NVIDIA ModelOpt.
CALIB_HINT = "pip install 'fgsl-spotter[calib]' (nvidia-modelopt[onnx])"
#: tritonclient is in the ``dev`` extra only (reading Triton configs back is a check, not serving).
TRITON_HINT = "pip install 'tritonclient[grpc]' (part of the 'dev' extra)"


def require(modules: Iterable[str], needed_by: str, hint: str, error: type[Exception] = EngineError) -> None:
    """Raise ``error`` (the caller's own type: :class:`EngineError`, ``CalibError``,
    ``UsageError``...) with :func:`fgsl.cli.missing_module`'s line when one of ``modules``
    cannot be imported; return quietly when all can."""
    reason = missing_module(modules, needed_by, hint)
    if reason is not None:
        raise error(reason)
