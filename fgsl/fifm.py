"""FIFM: Frequency-based Information Filtering Module (the paper's FIFM figure, ``figs/FIFM.png``; docs/model.md).

Two branches are built from the pyramid: classification from the coarse levels (L/8 and
L/4, each brought to L by a transposed conv) and spotting from the fine levels (L/2 by a
transposed conv, L by a conv); each branch is the ReLU of its sum. Then ``N`` blocks
exchange information between the branches: each branch sends its features through an
Information Filter Module (rFFT over time -> filter layer -> irFFT -> LayerNorm -> MLP) and
the result is added to the other branch.

The filter layer ``H(f0, f_a, f_b, A, Q, F(k, l))``
---------------------------------------------------
The paper draws a response with two resonant peaks at learnable frequencies ``f_cls`` and
``f_loc`` around a centre ``f0``, with learnable gain ``A`` and quality ``Q``, applied to the
spectrum ``F(k, l)`` (bin ``k``, channel ``l``). We use Lorentzian peaks (the magnitude
shape of a resonant band-pass), which are smooth and differentiable in every parameter::

    R(f; fc) = 1 / (1 + (Q * (f - fc) / f0)^2),       f0 = (f_cls + f_loc) / 2
    H(f; f_a, f_b)[l] = A_main[l] * R(f; f_a) + A_side[l] * R(f; f_b)

``f`` is in cycles per token (0 ... 0.5), so the half-width of a peak is ``f0 / Q``. The
filter sent to the classification branch is ``H(f; f_cls, f_loc)`` and the one sent to the
spotting branch is ``H(f; f_loc, f_cls)``: the same parameters with the roles of the two
peaks swapped, so each branch receives mostly the band its own task needs and a weighted
share of the other's. ``H`` is real (zero phase).

Two numerically equal forms
---------------------------
``irfft(H * rfft(x))`` equals a per-channel circular convolution of ``x`` with
``h = irfft(H)``. The ``"conv"`` form computes ``h`` with a constant cosine basis (a MatMul,
no FFT op) and applies it as a depthwise ``Conv1d`` over a circularly extended input, so the
module exports to plain ONNX. ``FGSL.set_fifm_form`` switches forms; tests prove they agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FORMS = ("freq", "conv")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def cosine_basis(length: int) -> torch.Tensor:
    """``[L//2+1, L]`` matrix ``B`` with ``irfft(H, n=L) == H @ B`` for a real spectrum ``H``.

    ``h[n] = (1/L) * sum_k w_k H_k cos(2 pi k n / L)`` where ``w_k`` is 1 for the DC bin and
    (for even ``L``) the Nyquist bin, 2 otherwise.
    """
    bins = length // 2 + 1
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    n = torch.arange(length, dtype=torch.float64)[None, :]
    weights = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if length % 2 == 0:
        weights[-1] = 1.0
    return (weights * torch.cos(2 * math.pi * k * n / length) / length).float()


def filter_frequency_form(x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """``irfft(response * rfft(x))`` over the last axis; x ``[B, C, L]``, response ``[C, L//2+1]``.

    Half-precision inputs are computed in float32 and returned in their dtype: torch's FFTs
    take no bfloat16 at all and half only at power-of-two lengths, and mixed-precision
    training on a GPU hands this filter bf16 activations (seen on an H100: "Unsupported
    dtype BFloat16").
    """
    length = x.shape[-1]
    full = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = torch.fft.irfft(torch.fft.rfft(full, dim=-1) * response.to(full.dtype), n=length, dim=-1)
    return y.to(x.dtype)


def filter_conv_form(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel circular convolution ``y[t] = sum_s kernel[s] x[(t - s) mod L]``.

    ``kernel`` is ``[C, L]``. The input is extended circularly on the left by ``L - 1``
    samples and convolved (PyTorch convs correlate, hence the flipped kernel).
    """
    extended = torch.cat([x[..., 1:], x], dim=-1)
    return F.conv1d(extended, kernel.flip(-1).unsqueeze(1), groups=x.shape[1])


class ResonantFilter(nn.Module):
    """The learnable two-peak response shared by one exchange block (both directions)."""

    def __init__(self, channels: int, f_cls: float = 0.06, f_loc: float = 0.25, q: float = 1.0) -> None:
        super().__init__()
        # Peaks live in (0, 0.5) cycles/token via 0.5 * sigmoid; Q > 0 via softplus.
        self.f_cls_raw = nn.Parameter(torch.tensor(_logit(f_cls / 0.5)))
        self.f_loc_raw = nn.Parameter(torch.tensor(_logit(f_loc / 0.5)))
        self.q_raw = nn.Parameter(torch.tensor(math.log(math.expm1(q))))
        self.gain_main = nn.Parameter(torch.ones(channels))
        self.gain_side = nn.Parameter(torch.full((channels,), 0.5))

    def peaks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_cls, f_loc) in cycles per token."""
        return 0.5 * torch.sigmoid(self.f_cls_raw), 0.5 * torch.sigmoid(self.f_loc_raw)

    def response(self, length: int, to_classification: bool) -> torch.Tensor:
        """``H`` sampled at the rFFT bins of a length-``L`` signal: ``[C, L//2+1]``."""
        f_cls, f_loc = self.peaks()
        f_main, f_side = (f_cls, f_loc) if to_classification else (f_loc, f_cls)
        centre = 0.5 * (f_cls + f_loc)
        q = F.softplus(self.q_raw) + 1e-3
        freqs = torch.arange(length // 2 + 1, device=f_cls.device, dtype=f_cls.dtype) / length

        def peak(fc: torch.Tensor) -> torch.Tensor:
            return 1.0 / (1.0 + (q * (freqs - fc) / centre) ** 2)

        return self.gain_main[:, None] * peak(f_main) + self.gain_side[:, None] * peak(f_side)


class InformationFilter(nn.Module):
    """One direction of one exchange: filter over time, then ``y + MLP(LN(y))``."""

    def __init__(self, channels: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor, response: torch.Tensor, form: str, basis: torch.Tensor | None) -> torch.Tensor:
        if form == "freq":
            y = filter_frequency_form(x, response)
        else:
            y = filter_conv_form(x, response @ basis)
        y = y.transpose(1, 2)
        return (y + self.mlp(self.norm(y))).transpose(1, 2)


class ExchangeBlock(nn.Module):
    """``cls, spot -> cls + IFM_cls(spot), spot + IFM_spot(cls)`` (the crossing in the figure)."""

    def __init__(self, channels: int, mlp_ratio: float) -> None:
        super().__init__()
        self.filter = ResonantFilter(channels)
        self.to_cls = InformationFilter(channels, mlp_ratio)
        self.to_spot = InformationFilter(channels, mlp_ratio)

    def forward(
        self, cls: torch.Tensor, spot: torch.Tensor, form: str, basis: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = cls.shape[-1]
        to_cls = self.to_cls(spot, self.filter.response(length, True), form, basis)
        to_spot = self.to_spot(cls, self.filter.response(length, False), form, basis)
        return cls + to_cls, spot + to_spot


class FIFM(nn.Module):
    """Pyramid ``[P0 (L), P1 (L/2), P2 (L/4), P3 (L/8)]`` -> (cls ``[B,C,L]``, spot ``[B,C,L]``)."""

    def __init__(self, channels: int, blocks: int, mlp_ratio: float, length: int, form: str = "freq") -> None:
        super().__init__()
        self.up_l8 = nn.ConvTranspose1d(channels, channels, 8, stride=8)
        self.up_l4 = nn.ConvTranspose1d(channels, channels, 4, stride=4)
        self.up_l2 = nn.ConvTranspose1d(channels, channels, 2, stride=2)
        self.conv_l1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ExchangeBlock(channels, mlp_ratio) for _ in range(blocks))
        self.register_buffer("basis", cosine_basis(length), persistent=False)
        self.form = "freq"
        self.set_form(form)

    def set_form(self, form: str) -> None:
        if form not in FORMS:
            raise ValueError(f"FIFM form must be one of {FORMS}, not {form!r}")
        self.form = form

    def forward(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        p0, p1, p2, p3 = levels
        cls = F.relu(self.up_l8(p3) + self.up_l4(p2))
        spot = F.relu(self.up_l2(p1) + self.conv_l1(p0))
        basis = self.basis if self.form == "conv" else None
        for block in self.blocks:
            cls, spot = block(cls, spot, self.form, basis)
        return cls, spot
