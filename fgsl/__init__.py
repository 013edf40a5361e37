"""FGSL: Frequency-Gated Spatiotemporal Learning for micro-expression spotting and recognition.

The model and the science, torch only: ``config`` (presets), ``backbone`` (VideoMAE V2),
``iga``, ``neck``, ``fifm``, ``heads``, ``model``, ``losses``, ``decode``, ``weights``.
Submodules are imported on use so that ``python -m fgsl.model`` runs cleanly.
"""

__version__ = "0.1.0"
