"""IGA: Information Gate Adapter (the paper's adapter figure, ``figs/adaptor.png``; docs/model.md).

Each adapter is a side branch that reads the (spatially pooled) output of one frozen
encoder block: Down -> depthwise temporal conv -> GELU -> Gate Memory Module, plus a skip
around them, then Up. Up is zero-initialised, so at step 0 the adapted features equal the
frozen encoder's. The adapters' outputs are summed with the encoder's final output; nothing
flows back into the frozen blocks, which is what lets the live spotter cache encoder
features per chunk.

The Gate Memory Unit follows the figure's right panel: a sigmoid gate ``g`` and a tanh
candidate ``c`` computed from the input; the unit keeps ``g * x`` and adds ``(1 - g) * c``
(the "dynamic forgetting" of the paper), then a temporal Conv1d, the residual and GELU form
the Gate Memory Module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GateMemoryModule(nn.Module):
    """GMU (gate + candidate) -> Conv1d over time -> + input -> GELU, on ``[B, L, r]``."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, dim)
        self.candidate = nn.Linear(dim, dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(x))
        memory = g * x + (1.0 - g) * torch.tanh(self.candidate(x))
        mixed = self.conv(memory.transpose(1, 2)).transpose(1, 2)
        return F.gelu(mixed + x)


class IGA(nn.Module):
    """One adapter on ``[B, L, D]`` time features; returns a ``[B, L, D]`` correction."""

    def __init__(self, dim: int, bottleneck: int, kernel: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.dwconv = nn.Conv1d(bottleneck, bottleneck, kernel, padding=kernel // 2, groups=bottleneck)
        self.gmm = GateMemoryModule(bottleneck, kernel)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        y = F.gelu(self.dwconv(h.transpose(1, 2)).transpose(1, 2))
        return self.up(self.gmm(y) + h)


class IGAStack(nn.Module):
    """All adapters; ``taps [B, n, L, D]`` -> the sum of their corrections ``[B, L, D]``."""

    def __init__(self, dim: int, count: int, bottleneck: int, kernel: int) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(IGA(dim, bottleneck, kernel) for _ in range(count))

    def forward(self, taps: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(taps[:, 0])
        for i, adapter in enumerate(self.adapters):
            out = out + adapter(taps[:, i])
        return out
