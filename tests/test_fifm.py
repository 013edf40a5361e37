"""FIFM: the frequency and circular-convolution forms agree; the filter's peaks learn."""

import numpy as np
import pytest
import torch

from fgsl.config import preset
from fgsl.fifm import ResonantFilter, cosine_basis, filter_conv_form, filter_frequency_form
from fgsl.model import build
from tests.conftest import randomise_adapters


@pytest.mark.parametrize("length", [5, 8, 15, 16, 31, 32])
def test_frequency_form_equals_circular_convolution_for_random_filters(length):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(3, 7, length, generator=g)
    response = torch.randn(7, length // 2 + 1, generator=g)
    freq = filter_frequency_form(x, response)
    conv = filter_conv_form(x, response @ cosine_basis(length))
    assert torch.allclose(freq, conv, atol=1e-5)
    # ...and the conv form really is a circular convolution with h = irfft(H).
    h = torch.fft.irfft(response, n=length)
    direct = torch.stack([sum(h[:, s] * x[..., (t - s) % length] for s in range(length)) for t in range(length)], -1)
    assert torch.allclose(conv, direct, atol=1e-5)


def test_cosine_basis_is_irfft_of_a_real_spectrum():
    for length in (6, 7):
        spectrum = torch.randn(4, length // 2 + 1)
        assert torch.allclose(spectrum @ cosine_basis(length), torch.fft.irfft(spectrum, n=length), atol=1e-6)


def test_both_model_forms_give_the_same_outputs(tiny_model):
    randomise_adapters(tiny_model)
    clips = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        freq = tiny_model(clips)
        tiny_model.set_fifm_form("conv")
        conv = tiny_model(clips)
    for key in freq:
        assert torch.allclose(freq[key], conv[key], atol=1e-5)
    with pytest.raises(ValueError, match="FIFM form"):
        tiny_model.set_fifm_form("wavelet")


def test_filters_swap_roles_of_the_two_peaks():
    filt = ResonantFilter(channels=2)
    with torch.no_grad():
        filt.gain_side.fill_(0.0)
    to_cls = filt.response(64, to_classification=True)[0]
    to_spot = filt.response(64, to_classification=False)[0]
    f_cls, f_loc = (float(f.detach()) for f in filt.peaks())
    assert abs(int(to_cls.argmax()) / 64 - f_cls) <= 1 / 64
    assert abs(int(to_spot.argmax()) / 64 - f_loc) <= 1 / 64


def test_learned_peaks_move_toward_the_band_that_matters():
    """Fit the spotting-bound filter to pass a 0.4 cycles/token tone: f_loc must climb."""
    torch.manual_seed(0)
    filt = ResonantFilter(channels=4)
    f_cls0, f_loc0 = (float(f.detach()) for f in filt.peaks())
    opt = torch.optim.Adam(filt.parameters(), lr=0.05)
    t = torch.arange(64, dtype=torch.float32)
    tone = torch.cos(2 * torch.pi * 0.4 * t).expand(1, 4, 64)
    for _ in range(60):
        out = filter_frequency_form(tone, filt.response(64, to_classification=False))
        loss = ((out - tone) ** 2).mean() + 0.1 * filt.gain_side.abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    f_cls1, f_loc1 = (float(f.detach()) for f in filt.peaks())
    assert f_loc1 > f_loc0 + 0.05
    assert loss.item() < 0.1
    assert f_cls1 != f_cls0 or f_loc1 != f_loc0


def test_fifm_parameters_receive_gradients_in_the_full_model():
    model = build(preset("tiny", window_frames=16))
    randomise_adapters(model)
    out = model(torch.randn(1, 3, 16, 32, 32))
    (out["scores"].sum() + out["offsets"].sum()).backward()
    filt = model.fifm.blocks[0].filter
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in filt.parameters())


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device on this machine"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_frequency_form_takes_mixed_precision_activations(dtype, device):
    """Autocast on a GPU feeds FIFM bf16; torch's FFTs refuse bf16 (and odd-length half)."""
    x = torch.randn(2, 8, 15, generator=torch.Generator().manual_seed(0)).to(device)
    response = ResonantFilter(8).response(15, True).detach().to(device)
    want = filter_frequency_form(x, response)
    low = x.to(dtype).requires_grad_()
    got = filter_frequency_form(low, response)
    assert got.dtype == dtype and (got.float() - want).abs().max().item() <= 0.05 * want.abs().max().item()
    got.float().sum().backward()
    assert low.grad is not None and low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize("device", DEVICES)
def test_frequency_form_keeps_float64(device):
    """Double precision (gradient checks) is computed in double, not cast down."""
    x = torch.randn(2, 8, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    response = ResonantFilter(8).response(15, True).detach().to(device)
    got = filter_frequency_form(x, response)
    want = np.fft.irfft(np.fft.rfft(x.cpu().numpy(), axis=-1) * response.cpu().numpy().astype(np.complex128), n=15, axis=-1)
    assert got.dtype == torch.float64 and np.abs(got.cpu().numpy() - want).max() <= 1e-12  # float32 is 4e-7 off
