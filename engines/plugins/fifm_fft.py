"""The FIFM frequency filter as a TensorRT plugin: ``y = irfft(rfft(x) * H, n=L)`` over time.

FIFM (``fgsl.fifm``) filters each channel of ``x [B, C, L]`` over time with a response
``H [C, L//2+1]`` sampled at the rFFT bins. ONNX has no portable rFFT, so the engines export
FIFM either as a circular convolution (``--fifm conv``, plain ONNX, runs everywhere) or, for
TensorRT, as one custom node that this module implements (``--fifm plugin``).

The contract (what ``engines.export`` emits and TensorRT's ONNX parser maps onto the plugin)
--------------------------------------------------------------------------------------------
* ONNX node: ``op_type`` :data:`OP_TYPE` (``"FIFMFilter"``) in domain :data:`ONNX_DOMAIN`
  (``"fgsl"``), with the string attribute ``plugin_namespace = "fgsl"``. TensorRT's ONNX
  parser looks a node it has no importer for up in the plugin registry by its ``op_type``
  (the plugin's name) and the ``plugin_namespace`` attribute (NVIDIA/TensorRT,
  ``samples/python/quickly_deployable_plugins/README.md``, "ONNX model with a plugin").
* Inputs, in this order: ``x`` ``[B, C, L]`` float32 (or float16), ``response_re`` and
  ``response_im`` ``[C, L//2+1]`` float32 (or float16): the real and imaginary parts of the
  filter, as initializers of the graph (the filter is fixed after training). FIFM's learned
  Lorentzian response is real, so FIFM exports ``response_im = 0``; the kernel takes any
  complex filter.
* Output: ``y`` ``[B, C, L]``, the dtype of ``x``.
* No other attributes: the weights travel as inputs (TensorRT folds them into the engine as
  constants), so one registered plugin serves every block, channel count and length.

Semantics are exactly ``torch.fft.irfft(torch.fft.rfft(x, dim=-1) * H, n=L, dim=-1)``: the
imaginary part of ``H`` at the DC bin (and, for even ``L``, the Nyquist bin) is dropped by
the inverse real FFT, as it is in torch and NumPy. The computation runs in float32 (at least):
half-precision cuFFT transforms only lengths that are powers of two, and FIFM's lengths
(``L``, a multiple of 8 tokens) need not be.

The plugin (TensorRT's Python plugin API, ``tensorrt.plugin``)
--------------------------------------------------------------
:func:`register_plugin` registers ``fgsl::FIFMFilter`` with ``@trtp.register`` (shape and
type: the output is like ``x``), ``@trtp.autotune`` (FP32 or FP16 ``x``/``y``, linear
layout) and ``@trtp.impl`` (the kernel: :func:`fifm_fft_filter` on the CUDA stream TensorRT
hands in, through ``torch.cuda.ExternalStream``; ``torch.fft`` on CUDA is cuFFT). Sources:
the ``tensorrt.plugin`` API reference (``trt_plugin_register``, ``trt_plugin_impl``,
``trt_plugin_autotune``, "Writing custom operators with TensorRT Python plugins",
docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/) and NVIDIA's sample
``samples/python/quickly_deployable_plugins/qdp_defs.py``. It is a JIT plugin: the engine
calls back into Python, so the process that runs the engine must have registered the plugin
(:class:`engines.trt.TensorRTEngine` does) and a C++-only runtime (trtexec, Triton's
TensorRT backend) cannot run an engine that contains it; use the ``conv`` form there.

Nothing here imports TensorRT at module level: the kernel is plain torch and is tested on
CPU against ``fgsl.fifm`` (and on CUDA where a GPU exists). :func:`register_plugin` is the
only place that touches ``tensorrt``, and it does nothing (returns ``False``) where the
package is missing.

Note: this module deliberately has no ``from __future__ import annotations``:
``tensorrt.plugin`` validates the decorated functions' annotations with ``issubclass``, which
needs real classes, not strings.
"""

import threading
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

#: The plugin's namespace and name; TensorRT's plugin id is ``"fgsl::FIFMFilter"``.
PLUGIN_NAMESPACE = "fgsl"
PLUGIN_NAME = "FIFMFilter"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
#: The ONNX node that the plugin implements.
ONNX_DOMAIN = "fgsl"
OP_TYPE = PLUGIN_NAME
#: Input and output names of the ONNX node / plugin, in order.
INPUTS = ("x", "response_re", "response_im")
OUTPUTS = ("y",)
#: Type/format combinations advertised to TensorRT's autotuner: ``x`` and ``y`` together
#: FP32 or FP16 (dependent, ``|``); each response independently FP32 or FP16 (``*``).
AUTOTUNE_TYPES = "FP32|FP16, FP32*FP16, FP32*FP16, FP32|FP16"
AUTOTUNE_LAYOUTS = "LINEAR"


class FIFMFilterError(ValueError):
    """Inputs the FIFM filter cannot take (shapes or dtypes), in one line."""


def bins(length: int) -> int:
    """Number of rFFT bins of a length-``L`` signal: ``L // 2 + 1``."""
    return length // 2 + 1


def check_shapes(x_shape: tuple[int, ...], re_shape: tuple[int, ...], im_shape: Optional[tuple[int, ...]]) -> None:
    """Raise :class:`FIFMFilterError` unless ``x [..., C, L]`` and responses ``[C, L//2+1]`` fit."""
    if len(x_shape) < 2:
        raise FIFMFilterError(f"x must be [..., C, L], got shape {list(x_shape)}")
    channels, length = x_shape[-2], x_shape[-1]
    if length < 1:
        raise FIFMFilterError(f"x has an empty time axis: {list(x_shape)}")
    want = (channels, bins(length))
    for name, shape in (("response_re", re_shape), ("response_im", im_shape)):
        if shape is not None and tuple(shape) != want:
            raise FIFMFilterError(f"{name} must be [C, L//2+1] = {list(want)} for x {list(x_shape)}, got {list(shape)}")


def fifm_fft_filter(x: torch.Tensor, response_re: torch.Tensor, response_im: Optional[torch.Tensor] = None,
                    out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The kernel: ``irfft(rfft(x, dim=-1) * (response_re + i response_im), n=L, dim=-1)``.

    ``x`` is ``[..., C, L]`` (FIFM passes ``[B, C, L]``); the responses are ``[C, L//2+1]``
    (``response_im=None`` means a real filter). Computes in float32 (float64 stays float64)
    on ``x``'s device and returns ``x``'s dtype; with ``out`` the result is written there
    (TensorRT's output buffer) and ``out`` is returned.
    """
    check_shapes(tuple(x.shape), tuple(response_re.shape), None if response_im is None else tuple(response_im.shape))
    if not (x.is_floating_point() and response_re.is_floating_point()):
        raise FIFMFilterError(f"x and the responses must be floating point, got {x.dtype} and {response_re.dtype}")
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    length = x.shape[-1]
    spectrum = torch.fft.rfft(x.to(compute), dim=-1)
    re = response_re.to(device=x.device, dtype=compute)
    if response_im is None:
        filtered = spectrum * re
    else:
        filtered = spectrum * torch.complex(re, response_im.to(device=x.device, dtype=compute))
    y = torch.fft.irfft(filtered, n=length, dim=-1)
    if out is None:
        return y.to(x.dtype)
    if tuple(out.shape) != tuple(x.shape):
        raise FIFMFilterError(f"output buffer is {list(out.shape)}, expected {list(x.shape)}")
    out.copy_(y)
    return out


def fifm_fft_filter_numpy(x: np.ndarray, response_re: np.ndarray, response_im: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`fifm_fft_filter` on NumPy arrays (CPU), for checks of exported graphs."""
    def tensor(a: np.ndarray) -> torch.Tensor:  # a writable contiguous copy only where needed
        return torch.from_numpy(np.require(a, requirements=["C", "W"]))

    im = None if response_im is None else tensor(response_im)
    return fifm_fft_filter(tensor(x), tensor(response_re), im).numpy()


def block_responses(model: Any, length: Optional[int] = None) -> list[dict[str, np.ndarray]]:
    """The fixed filters of a trained FGSL's FIFM blocks, as the plugin's inputs.

    One entry per exchange block: ``{"to_cls": [C, F], "to_spot": [C, F]}`` (float32, real;
    ``response_im`` is zero) for windows of ``length`` tokens (default: the config's ``L``).
    ``model`` is an ``fgsl.model.FGSL``. What the exporter writes as initializers must equal
    these (tests).
    """
    length = model.cfg.tokens if length is None else int(length)
    out = []
    with torch.no_grad():
        for block in model.fifm.blocks:
            out.append({
                "to_cls": block.filter.response(length, True).float().cpu().numpy(),
                "to_spot": block.filter.response(length, False).float().cpu().numpy(),
            })
    return out


# ---------------------------------------------------------------------------------------
# TensorRT registration (only where tensorrt is importable)
# ---------------------------------------------------------------------------------------

_lock = threading.Lock()
_registered = False
_unavailable: Optional[str] = None


def _as_torch(tensor: Any) -> torch.Tensor:
    """A ``tensorrt.plugin.Tensor`` (device memory, ``__cuda_array_interface__``) as a torch view."""
    return torch.as_tensor(tensor, device="cuda")


def _on_stream(stream: int) -> Any:
    """The torch stream context for TensorRT's CUDA stream handle."""
    return torch.cuda.stream(torch.cuda.ExternalStream(stream))


def plugin_impl(x: Any, response_re: Any, response_im: Any, outputs: Any, stream: int) -> None:
    """Body of the ``@trtp.impl`` function: the kernel on TensorRT's stream, into its output buffer.

    ``x``/``response_*``/``outputs[0]`` are ``tensorrt.plugin.Tensor`` objects (device memory);
    they are viewed as torch tensors without a copy, and the kernel's work is queued on
    ``stream`` so it is ordered with the rest of the engine.
    """
    with _on_stream(stream):
        _x, _re, _im, _y = (_as_torch(t) for t in (x, response_re, response_im, outputs[0]))
        fifm_fft_filter(_x, _re, _im, out=_y)


def _define(trtp: Any) -> None:
    """Apply the three ``tensorrt.plugin`` decorators (annotations must be real classes)."""
    tensor_desc, tensor = trtp.TensorDesc, trtp.Tensor

    @trtp.register(PLUGIN_ID)
    def fifm_filter_desc(x: tensor_desc, response_re: tensor_desc, response_im: tensor_desc) -> tensor_desc:
        return x.like()

    @trtp.autotune(PLUGIN_ID)
    def fifm_filter_autotune(x: tensor_desc, response_re: tensor_desc, response_im: tensor_desc,
                             outputs: Tuple[tensor_desc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(AUTOTUNE_TYPES, AUTOTUNE_LAYOUTS)]

    @trtp.impl(PLUGIN_ID)
    def fifm_filter_impl(x: tensor, response_re: tensor, response_im: tensor, outputs: Tuple[tensor],
                         stream: int) -> None:
        plugin_impl(x, response_re, response_im, outputs, stream)


def register_plugin() -> bool:
    """Register ``fgsl::FIFMFilter`` with TensorRT (once per process); ``False`` without TensorRT.

    Safe to call any number of times and from several threads. Importing
    ``tensorrt.plugin`` needs no GPU, and registering only records Python callbacks; no
    TensorRT engine object is created here. The reason for a ``False`` is in
    :func:`unavailable_reason`. (Not :func:`engines.extras.require`: a ``False`` is no error
    here, and a TensorRT without ``tensorrt.plugin`` is too old, not missing, which that
    probe's "needs tensorrt" line would misstate; callers check TensorRT itself first.)
    """
    global _registered, _unavailable
    with _lock:
        if _registered:
            return True
        try:
            import tensorrt.plugin as trtp  # noqa: PLC0415 (optional, lazy on purpose)
        except ImportError as exc:  # no tensorrt, or one without Python plugins (before 10.7)
            _unavailable = f"tensorrt.plugin cannot be imported ({exc})"
            return False
        _define(trtp)
        _registered = True
        _unavailable = None
        return True


def unavailable_reason() -> Optional[str]:
    """Why the last :func:`register_plugin` returned ``False`` (``None`` if it did not)."""
    return _unavailable


def is_registered() -> bool:
    return _registered


__all__ = [
    "AUTOTUNE_LAYOUTS", "AUTOTUNE_TYPES", "FIFMFilterError", "INPUTS", "ONNX_DOMAIN", "OP_TYPE", "OUTPUTS",
    "PLUGIN_ID", "PLUGIN_NAME", "PLUGIN_NAMESPACE", "bins", "block_responses", "check_shapes", "fifm_fft_filter",
    "fifm_fft_filter_numpy", "is_registered", "plugin_impl", "register_plugin", "unavailable_reason",
]
