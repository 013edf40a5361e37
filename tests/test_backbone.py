"""The VideoMAE V2 importer and the encoder's faithfulness to the official formulas."""

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fgsl.backbone import (
    STANDARD_HEADS,
    CheckpointError,
    VideoMAEEncoder,
    infer_backbone_config,
    map_checkpoint,
    official_state_dict,
    position_table,
    read_official_checkpoint,
    sinusoid_table,
)
from fgsl.config import VIT_B, VIT_G, VIT_L, VIT_S, BackboneConfig, preset
from fgsl import weights
from fgsl.convert_backbone import convert, load_into
from fgsl.model import build

SMALL = BackboneConfig(embed_dim=48, depth=2, num_heads=2, pretrain_image_size=64)


def official_keys_state(cfg: BackboneConfig, fine_tuned: bool = True) -> dict[str, torch.Tensor]:
    """Random tensors under the key names of OpenGVLab/VideoMAEv2 modeling_finetune.py."""
    g = torch.Generator().manual_seed(0)
    d, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    s = {
        "patch_embed.proj.weight": r(d, 3, cfg.tubelet_size, cfg.patch_size, cfg.patch_size),
        "patch_embed.proj.bias": r(d),
    }
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        s.update({
            p + "norm1.weight": 1 + r(d), p + "norm1.bias": r(d),
            p + "attn.qkv.weight": r(3 * d, d), p + "attn.q_bias": r(d), p + "attn.v_bias": r(d),
            p + "attn.proj.weight": r(d, d), p + "attn.proj.bias": r(d),
            p + "norm2.weight": 1 + r(d), p + "norm2.bias": r(d),
            p + "mlp.fc1.weight": r(hidden, d), p + "mlp.fc1.bias": r(hidden),
            p + "mlp.fc2.weight": r(d, hidden), p + "mlp.fc2.bias": r(d),
        })
    if fine_tuned:  # mean pooling: fc_norm + a 710-class head
        s.update({"fc_norm.weight": 1 + r(d), "fc_norm.bias": r(d), "head.weight": r(710, d), "head.bias": r(710)})
    else:  # pretraining: encoder.* prefix, a real final norm
        s = {"encoder." + k: v for k, v in s.items()}
        s.update({"encoder.norm.weight": 1 + r(d), "encoder.norm.bias": r(d), "decoder.blocks.0.norm1.weight": r(d)})
    return s


def reference_videomae(state: dict[str, torch.Tensor], cfg: BackboneConfig, chunk: torch.Tensor) -> torch.Tensor:
    """The official forward written out with plain tensor ops (per-time mean + fc_norm)."""
    x = F.conv3d(chunk, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=(cfg.tubelet_size, cfg.patch_size, cfg.patch_size))
    b, d, t, h, w = x.shape
    x = x.flatten(2).transpose(1, 2) + position_table(cfg, chunk.shape[-1])
    heads = cfg.num_heads
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (d,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps=1e-6)
        qkv_bias = torch.cat([state[p + "attn.q_bias"], torch.zeros(d), state[p + "attn.v_bias"]])
        qkv = F.linear(y, state[p + "attn.qkv.weight"], qkv_bias).reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (d // heads) ** -0.5, qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        x = x + F.linear(att.transpose(1, 2).reshape(b, -1, d), state[p + "attn.proj.weight"], state[p + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"])),
                     state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
        x = x + y
    pooled = x.reshape(b, t, h * w, d).mean(2)
    return F.layer_norm(pooled, (d,), state["fc_norm.weight"], state["fc_norm.bias"], eps=1e-6)


def test_importer_maps_official_keys_and_matches_the_official_forward(tmp_path):
    raw = official_keys_state(SMALL)
    pth = tmp_path / "official.pth"
    torch.save({"module": raw}, pth)
    dst = tmp_path / "backbone.safetensors"
    cfg, ignored = convert(pth, dst, heads=SMALL.num_heads)
    assert (cfg.embed_dim, cfg.depth, cfg.tubelet_size) == (48, 2, 2)
    assert ignored == ["head.bias", "head.weight"]

    model = build(preset("tiny"))
    load_into(model, dst)
    chunk = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        ours, _ = model.encode_chunk(chunk)
    expected = reference_videomae(raw, SMALL, chunk)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_pretraining_checkpoints_with_encoder_prefix_are_unwrapped():
    state = official_state_dict({"model": official_keys_state(SMALL, fine_tuned=False)})
    encoder = VideoMAEEncoder(SMALL, 32, taps=())
    mapped, ignored = map_checkpoint(state, encoder)
    assert "norm.weight" in mapped and "blocks.1.attn.q_bias" in mapped
    assert ignored == ["unused.decoder.blocks.0.norm1.weight"]


def test_missing_key_and_wrong_shape_are_listed_in_one_error():
    state = official_state_dict({"module": official_keys_state(SMALL)})
    del state["blocks.1.attn.v_bias"]
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(10, 48)
    state["blocks.0.attn.extra"] = torch.zeros(1)
    encoder = VideoMAEEncoder(SMALL, 32, taps=())
    with pytest.raises(CheckpointError) as err:
        map_checkpoint(state, encoder)
    message = str(err.value)
    assert "missing keys: blocks.1.attn.v_bias" in message
    assert "unexpected keys: blocks.0.attn.extra" in message
    assert "blocks.0.mlp.fc1.weight (10, 48) != (192, 48)" in message


def test_unsafe_or_corrupt_pth_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_official_checkpoint(bad)

    class Evil:  # a pickle that would run code: weights_only refuses to build it
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"module": Evil()}, evil)
    with pytest.raises(CheckpointError, match="weights-only") as refused:
        read_official_checkpoint(evil)
    assert "\n" not in str(refused.value)  # torch's multi-line advice is folded into one line
    cli = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(evil), str(tmp_path / "e.safetensors")],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "Warning" not in cli.stderr, cli.stderr


def test_converted_backbone_for_another_vit_is_refused(tmp_path):
    pth = tmp_path / "official.pth"
    torch.save({"module": official_keys_state(BackboneConfig(embed_dim=64, depth=2, num_heads=2))}, pth)
    convert(pth, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="embed_dim=64"):
        load_into(build(preset("tiny")), tmp_path / "b.safetensors")


def test_convert_cli_reports_unused_keys_and_errors_in_one_line(tmp_path):
    pth = tmp_path / "official.pth"
    torch.save({"module": official_keys_state(SMALL)}, pth)
    ok = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(pth), str(tmp_path / "o.safetensors"),
                         "--heads", "2"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "not used by FGSL (2 keys): head.bias, head.weight" in ok.stdout
    for heads in ("0", "5"):  # the width (SMALL's) is not divisible by them
        odd = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(pth), str(tmp_path / "h.safetensors"),
                              "--heads", heads], capture_output=True, text=True)
        assert odd.returncode == 2 and f"--heads {heads}: must divide" in odd.stderr, odd.stderr
    state = official_keys_state(SMALL)
    del state["norm.weight" if "norm.weight" in state else "fc_norm.weight"]
    torch.save({"module": state}, pth)
    bad = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(pth), str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: {pth}: checkpoint does not fit the configured ViT: missing keys: norm.weight"  # which file: said
    ]
    torch.save({"module": {"something.else": torch.zeros(2)}}, tmp_path / "other.pth")
    other = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(tmp_path / "other.pth"),
                            str(tmp_path / "y.safetensors")], capture_output=True, text=True)
    assert (other.returncode, other.stderr.strip().splitlines()) == (
        2, [f"error: {tmp_path / 'other.pth'}: not a VideoMAE ViT checkpoint: no patch_embed.proj.weight"])
    # A run's own model as DST would be replaced by a bare encoder: the run would no longer load.
    run = tmp_path / "run"
    weights.save(build(preset("tiny"), seed=0), run, trained=True)
    before = (run / "model.safetensors").read_bytes()
    torch.save({"module": official_keys_state(SMALL)}, pth)
    clobber = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(pth), str(run / "model.safetensors"),
                              "--heads", "2"], capture_output=True, text=True)
    assert (clobber.returncode, clobber.stderr.strip().splitlines()) == (
        2, [f"error: DST {run / 'model.safetensors'} is the model of the weights folder {run}; writing the backbone "
            "there would destroy that run: write it elsewhere"])
    assert (run / "model.safetensors").read_bytes() == before
    torch.save({"module": state}, pth)
    same = subprocess.run([sys.executable, "-m", "fgsl.convert_backbone", str(pth), str(pth)], capture_output=True,
                          text=True)
    assert same.returncode == 2 and same.stderr.strip().splitlines() == [
        f"error: DST {pth} would overwrite SRC {pth}; write it elsewhere"]
    assert torch.load(pth, weights_only=True)["module"].keys() == state.keys()  # the checkpoint is intact


def test_position_table_is_the_official_sinusoid_and_is_resized_spatially():
    table = sinusoid_table(5, 6)
    assert torch.allclose(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(table[3, 1], torch.cos(torch.tensor(3.0)))
    assert torch.allclose(table[2, 4], torch.sin(torch.tensor(2.0 / 10000 ** (4 / 6))))
    cfg = BackboneConfig()  # ViT-S, pretrained at 224 (14x14 grid)
    same = position_table(cfg, 224)
    assert torch.equal(same, sinusoid_table(8 * 14 * 14, 384))
    small = position_table(cfg, 112)
    assert small.shape == (8 * 7 * 7, 384)
    grid = same.reshape(8, 14, 14, 384)
    # Time slices stay separate: slice 3 of the resized table comes from slice 3 only.
    want = F.interpolate(grid[3].permute(2, 0, 1)[None], size=(7, 7), mode="bicubic", align_corners=False)
    assert torch.allclose(small.reshape(8, 7, 7, 384)[3], want[0].permute(1, 2, 0), atol=1e-6)


@pytest.mark.parametrize("standard", [VIT_S, VIT_B, VIT_L, VIT_G], ids=["S", "B", "L", "G"])
def test_standard_vit_sizes_are_recognised_from_tensor_shapes(standard):
    """A checkpoint stores no head count: each standard width gets its config's (the table is
    read off VIT_S/B/L/G, so it cannot drift from them). Shapes only (meta tensors: ViT-g is 1B parameters)."""
    d, hidden = standard.embed_dim, int(standard.embed_dim * standard.mlp_ratio)
    meta = {"device": "meta"}
    state = {"patch_embed.proj.weight": torch.empty(d, 3, standard.tubelet_size, standard.patch_size,
                                                    standard.patch_size, **meta),
             "blocks.0.mlp.fc1.weight": torch.empty(hidden, d, **meta)}
    state.update({f"blocks.{i}.norm1.weight": torch.empty(d, **meta) for i in range(standard.depth)})
    found = infer_backbone_config(state)
    assert (found.embed_dim, found.depth, found.num_heads) == (standard.embed_dim, standard.depth, standard.num_heads)
    assert found.mlp_ratio == pytest.approx(standard.mlp_ratio, rel=1e-3)
    assert STANDARD_HEADS == {384: 6, 768: 12, 1024: 16, 1408: 16}


@pytest.mark.parametrize("change, words", [
    ({"patch_embed.proj.weight": torch.empty(8, 48)}, "patch_embed.proj.weight has shape (8, 48), not (width, 3,"),
    ({"blocks.x.foo": torch.empty(1)}, "block 'x'"),
    ({"blocks.100000000.x": torch.empty(1)}, "block '100000000'"),
    ({"patch_embed.proj.weight": torch.empty(0, 3, 2, 16, 16)}, "width 0"),
])
def test_a_foreign_checkpoint_is_one_checkpoint_error(change, words):
    """Shapes and names no ViT has: ValueError, ZeroDivisionError or an allocator error before."""
    state = {"patch_embed.proj.weight": torch.empty(8, 3, 2, 16, 16), "blocks.0.mlp.fc1.weight": torch.empty(32, 8),
             "blocks.0.norm1.weight": torch.empty(8), **change}
    with pytest.raises(CheckpointError, match=r"^not a VideoMAE ViT checkpoint: " + re.escape(words)):
        infer_backbone_config(state)
