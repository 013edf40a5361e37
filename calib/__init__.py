"""Calibration data and post-training quantisation for FGSL engines.

* :mod:`calib.collect` (``python -m calib.collect``): representative aligned-face windows,
  gathered through the live pipeline (capture -> face tracker -> buffers) and normalised
  exactly as the FGSL spotter does, saved as one ``.npz``.
* :mod:`calib.quantize` (``python -m calib.quantize``): INT8 / FP8 Q/DQ ONNX with NVIDIA
  ModelOpt ONNX PTQ (entropy or max calibration on that data), FP16 with ModelOpt AutoCast;
  optional extra ``calib``. An ONNX Runtime INT8 stand-in (``--tool onnxruntime``) exists for
  machines without ModelOpt.
* :mod:`calib.report` (``python -m calib.report``): the quantised model against FP32 with
  ONNX Runtime on the calibration windows: raw outputs and decoded intervals.

See ``docs/calibration.md`` for what was run where.
"""

from __future__ import annotations

from fgsl.startup import startup_imports

# ``python -m calib.<cli>`` imports this package first, and torch with it: Ctrl-C then is no
# bug (fgsl.startup). A program that imports ``calib`` keeps its KeyboardInterrupt.
with startup_imports(__name__):
    from fgsl.cli import register_user_error


class CalibError(ValueError):
    """Bad calibration input (no face in any video, a damaged data file, a missing tool): one line."""


register_user_error(CalibError)

__all__ = ["CalibError"]
