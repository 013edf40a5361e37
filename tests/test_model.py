import pytest
import torch

from fgsl.config import PRESETS, preset
from fgsl.model import FGSL, InputShapeError, build
from tests.conftest import randomise_adapters


def _forward_shapes(cfg, batch=2):
    model = build(cfg)
    clips = torch.randn(batch, 3, cfg.window_frames, cfg.image_size, cfg.image_size)
    with torch.inference_mode():
        out = model(clips)
    assert out["scores"].shape == (batch, cfg.num_points, cfg.num_classes)
    assert out["offsets"].shape == (batch, cfg.num_points, 2)
    assert torch.isfinite(out["scores"]).all() and (out["offsets"] >= 0).all()
    return out


@pytest.mark.parametrize("window", [16, 64])
def test_tiny_forward_shapes(window):
    _forward_shapes(preset("tiny", window_frames=window))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["realtime", "balanced", "accurate"])
@pytest.mark.parametrize("window", [16, 64])
def test_every_preset_forward_shapes(name, window):
    _forward_shapes(preset(name, window_frames=window))


def test_zero_initialised_adapters_leave_the_frozen_backbone_unchanged(tiny_model):
    clips = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        final, taps = tiny_model.encode_window(clips)
        adapted = tiny_model.embed(final, taps)
        # The plain frozen encoder, without any adapter: chunk by chunk.
        plain = tiny_model.encoder(clips)[0]
    assert torch.allclose(adapted, plain, atol=1e-6)
    assert taps.abs().sum() > 0  # the adapters did see real inputs
    randomise_adapters(tiny_model)
    with torch.no_grad():
        assert not torch.allclose(tiny_model.embed(final, taps), plain, atol=1e-3)


def test_one_optimiser_step_changes_only_adapters_neck_fifm_and_heads(tiny_model):
    tiny_model.train()
    before = {k: v.detach().clone() for k, v in tiny_model.state_dict().items()}
    opt = torch.optim.AdamW(tiny_model.trainable_parameters(), lr=1e-2)
    out = tiny_model(torch.randn(2, 3, 16, 32, 32))
    (out["scores"].sum() + out["offsets"].sum()).backward()
    opt.step()
    changed = {k for k, v in tiny_model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, "nothing was trained"
    assert not any(k.startswith("encoder.") for k in changed)
    assert {k.split(".")[0] for k in changed} == {"iga", "neck", "fifm", "heads"}
    assert all(not p.requires_grad for p in tiny_model.encoder.parameters())
    assert not tiny_model.encoder.training


def test_forward_is_the_composition_of_encode_chunk_and_decode_window(tiny_cfg):
    cfg = tiny_cfg.replace(window_frames=48)
    model = build(cfg)
    randomise_adapters(model)
    clips = torch.randn(1, 3, 48, 32, 32)
    with torch.no_grad():
        whole = model(clips)
        parts = [model.encode_chunk(clips[:, :, i : i + 16]) for i in range(0, 48, 16)]
        final = torch.cat([p[0] for p in parts], 1)
        taps = torch.cat([p[1] for p in parts], 2)
        cached = model.decode_window(final, taps)
    for key in ("scores", "offsets"):
        assert torch.allclose(whole[key], cached[key], atol=1e-6)


def test_wrong_clip_shape_is_a_clear_error(tiny_model):
    with pytest.raises(InputShapeError, match=r"clips must be \[B, 3, 16, 32, 32\]"):
        tiny_model(torch.randn(1, 3, 8, 32, 32))


def test_build_is_reproducible_for_a_seed():
    a, b = build(PRESETS["tiny"], seed=3), build(PRESETS["tiny"], seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert isinstance(a, FGSL)
    # The seed is what fixes the random initialisation: another seed draws other weights.
    c = build(PRESETS["tiny"], seed=4).state_dict()
    assert c.keys() == a.state_dict().keys()
    assert any(not torch.equal(v, c[k]) for k, v in a.state_dict().items())


def test_summary_cli_takes_the_window_it_is_given(capsys):
    from fgsl.summary import main

    assert main(["--preset", "tiny", "--window", "0"]) == 2  # was silently the preset's own window
    assert capsys.readouterr().err.strip() == "error: invalid FGSL config: window_frames=0 is not a positive multiple of 16"
    assert main(["--preset", "tiny", "--window", "48", "--json"]) == 0
    assert '"clips": [null, 3, 48, 32, 32]' in capsys.readouterr().out
