"""TensorRT plugins for FGSL engines.

* :mod:`engines.plugins.fifm_fft`: the FIFM frequency filter (rFFT over time -> learned complex
  filter -> irFFT, per channel) as the TensorRT Python plugin ``fgsl::FIFMFilter``, and its
  kernel as a plain torch function (importable and tested without TensorRT).

Nothing here imports TensorRT until :func:`~engines.plugins.fifm_fft.register_plugin` is called.
"""

from __future__ import annotations

from .fifm_fft import ONNX_DOMAIN, OP_TYPE, PLUGIN_ID, fifm_fft_filter, register_plugin


__all__ = ["ONNX_DOMAIN", "OP_TYPE", "PLUGIN_ID", "fifm_fft_filter", "register_plugin"]
