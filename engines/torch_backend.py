"""Torch backend: the reference engine, running the PyTorch FGSL module directly."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from fgsl.model import FGSL

from .base import check_chunks, check_clips, check_features


class TorchEngine:
    """Runs ``fgsl.model.FGSL`` under ``torch.inference_mode`` on CPU or CUDA.

    Opened from a weights folder by ``engines.open(path, backend="torch")`` (the one way to
    open an engine from a path); the self-test and ``engines.build`` wrap an in-memory model.
    """

    backend = "torch"

    def __init__(self, model: FGSL, device: str = "cpu", source: str | None = None) -> None:
        self.device = torch.device(device)
        # nn.Module.to moves in place: on another device the engine runs a copy, so the
        # caller's model stays where it was (the self-test reuses one model for every backend).
        here = next(model.parameters()).device
        if here.type == self.device.type and self.device.index in (None, here.index):
            self.device = here  # "cuda" for a model on cuda:1 means cuda:1, where it is
            self.model = model.eval()
        else:
            self.model = copy.deepcopy(model).to(self.device).eval()
        self.cfg = model.cfg
        self.source = source

    def infer(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        clips = check_clips(clips, self.cfg)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(clips).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def encode_chunk(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        chunks = check_chunks(chunks, self.cfg)
        with torch.inference_mode():
            final, taps = self.model.encode_chunk(torch.from_numpy(chunks).to(self.device))
        return {"final": final.float().cpu().numpy(), "taps": taps.float().cpu().numpy()}

    def decode_window(self, final: np.ndarray, taps: np.ndarray) -> dict[str, np.ndarray]:
        final, taps = check_features(final, taps, self.cfg)
        with torch.inference_mode():
            out = self.model.decode_window(torch.from_numpy(final).to(self.device), torch.from_numpy(taps).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "backend": self.backend,
            "precision": "fp32",
            "device": str(self.device) if self.device.type != "cpu" else f"cpu ({torch.get_num_threads()} threads)",
            "input_shape": ["B", 3, c.window_frames, c.image_size, c.image_size],
            "preset": c.name,
            "fifm_form": self.model.fifm.form,
            "source": self.source,
        }
