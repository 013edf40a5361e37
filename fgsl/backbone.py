"""VideoMAE V2 ViT encoder (frozen in FGSL) and the official-checkpoint importer.

Facts taken from OpenGVLab/VideoMAEv2 ``models/modeling_finetune.py``:
tubelet ``Conv3d`` patch embedding ``patch_embed.proj`` with kernel = stride =
(tubelet, patch, patch); pre-LN blocks (``norm1``/``norm2``, eps 1e-6); attention ``qkv``
without bias plus separate ``q_bias``/``v_bias`` (k has no bias), scale ``head_dim**-0.5``;
MLP ``fc1``/GELU/``fc2``; optional layer scale ``gamma_1``/``gamma_2``; a fixed sinusoidal
position table that is not stored in checkpoints; ``norm`` (or ``fc_norm`` with mean pooling)
at the end; the classifier ``head`` is not used here. Tokens are ordered time-major
(``Conv3d`` output ``[B, D, t, h, w]`` flattened).

FGSL reads the encoder per 16-frame chunk: attention never crosses chunks, which is what
lets the live spotter cache each chunk's features (see docs/design.md, "Streaming FGSL").
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import CHUNK_FRAMES, VIT_B, VIT_G, VIT_L, VIT_S, BackboneConfig
from .messages import explain
from .statedict import mismatch


class CheckpointError(ValueError):
    """A backbone checkpoint that does not fit the configured ViT (the message lists why)."""


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table``: sin on even, cos on odd channels."""
    pos = np.arange(positions, dtype=np.float64)[:, None]
    rates = np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None, :]
    table = pos / rates
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table).float()


def position_table(cfg: BackboneConfig, image_size: int) -> torch.Tensor:
    """Position table ``[t*h*w, D]`` for a 16-frame chunk at ``image_size``.

    The table is built for the pretraining grid and its spatial part resized (bicubic, as
    VideoMAE V2 does when fine-tuning at another resolution) so that a token keeps the
    position code the pretrained weights expect.
    """
    t = CHUNK_FRAMES // cfg.tubelet_size
    g0 = cfg.pretrain_image_size // cfg.patch_size
    g = image_size // cfg.patch_size
    table = sinusoid_table(t * g0 * g0, cfg.embed_dim)
    if g == g0:
        return table
    grid = table.reshape(t, g0, g0, cfg.embed_dim).permute(0, 3, 1, 2)  # [t, D, g0, g0]
    grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(t * g * g, cfg.embed_dim)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        if cfg.init_values > 0:
            self.gamma_1 = nn.Parameter(torch.full((d,), cfg.init_values))
            self.gamma_2 = nn.Parameter(torch.full((d,), cfg.init_values))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # [B, D, t, h, w]


class VideoMAEEncoder(nn.Module):
    """ViT over one 16-frame chunk, returning time features pooled over space.

    ``forward(chunk [B,3,16,H,W])`` gives ``final [B, t, D]`` (the last block, spatially
    averaged, then the final LayerNorm, mirroring VideoMAE's mean pooling + ``fc_norm``) and
    ``taps [B, n_taps, t, D]`` (the spatially averaged outputs of the tapped blocks).
    """

    def __init__(self, cfg: BackboneConfig, image_size: int, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.taps = tuple(taps)
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        # Fixed, derived from the config: not a parameter and not saved with the weights.
        self.register_buffer("pos_embed", position_table(cfg, image_size), persistent=False)

    def forward(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(chunk)
        b, d, t, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed
        tapped = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                tapped.append(x.reshape(b, t, h * w, d).mean(2))
        final = self.norm(x.reshape(b, t, h * w, d).mean(2))
        taps = torch.stack(tapped, 1) if tapped else x.new_zeros(b, 0, t, d)
        return final, taps


# ---------------------------------------------------------------------- checkpoint import
#: Keys of official checkpoints that FGSL deliberately does not use: the action classifier
#: of fine-tuned checkpoints. They are reported by the importer, never dropped silently.
UNUSED_PREFIXES = ("head.",)


def official_state_dict(raw: dict) -> dict[str, torch.Tensor]:
    """Unwrap an official VideoMAE V2 checkpoint into plain encoder keys.

    Official files keep weights under ``module`` (the fine-tuning script also accepts
    ``model``); ``_orig_mod.``/``backbone.`` wrappers are stripped as the official loader does;
    pretraining checkpoints prefix encoder weights with ``encoder.``; ``fc_norm`` (mean-pooling models)
    plays the role of our final ``norm``.
    """
    for key in ("module", "model", "state_dict"):
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            continue
        for wrapper in ("_orig_mod.", "backbone."):  # torch.compile / detector wrappers
            if key.startswith(wrapper):
                key = key[len(wrapper) :]
        if key.startswith("encoder."):
            key = key[len("encoder.") :]
        elif key.startswith("decoder.") or key in ("mask_token",):
            key = "unused." + key
        if key.startswith("fc_norm."):
            key = "norm." + key[len("fc_norm.") :]
        out[key] = value
    return out


def map_checkpoint(
    state: dict[str, torch.Tensor], encoder: VideoMAEEncoder
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Match an unwrapped checkpoint to ``encoder``; returns (state dict, ignored keys).

    Raises :class:`CheckpointError` listing every missing key, unexpected key and shape
    mismatch at once. A stored ``pos_embed`` (learnable-position checkpoints) is checked
    against the configured grid and otherwise ignored: FGSL uses the fixed table.
    """
    expected = encoder.state_dict()
    ignored = sorted(k for k in state if k.startswith(UNUSED_PREFIXES) or k.startswith("unused."))
    mapped = {k: v for k, v in state.items() if k not in ignored and k != "pos_embed"}
    if "pos_embed" in state:
        ignored.append("pos_embed")
    problems = mismatch(mapped, expected)
    if problems:
        raise CheckpointError("checkpoint does not fit the configured ViT: " + "; ".join(problems))
    return {k: v.float() for k, v in mapped.items()}, ignored


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official ``.pth`` safely (``weights_only=True``) and unwrap it."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle it then refuses: our error says it
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as exc:  # torch raises many types for corrupt/unsafe pickles
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint "
                              f"({explain(exc)})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    return official_state_dict(raw)


#: Heads of the standard ViT sizes by width, read off the configs themselves so the two
#: cannot disagree: a checkpoint stores no head count (the attention weights are the same
#: shape for any split of the width), so a converted one gets its standard size's.
STANDARD_HEADS: dict[int, int] = {c.embed_dim: c.num_heads for c in (VIT_S, VIT_B, VIT_L, VIT_G)}


def infer_backbone_config(state: dict[str, torch.Tensor]) -> BackboneConfig:
    """Guess ViT width/depth/heads from tensor shapes (heads: :data:`STANDARD_HEADS`, else one
    per 64 channels, the ViT head size)."""
    try:
        dim = state["patch_embed.proj.weight"].shape[0]
        tubelet, patch = state["patch_embed.proj.weight"].shape[2:4]
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a VideoMAE ViT checkpoint: no {exc.args[0]}") from None
    except ValueError:  # (a patch embedding that is not a 5-D Conv3d weight)
        shape = tuple(state["patch_embed.proj.weight"].shape)
        raise CheckpointError(f"not a VideoMAE ViT checkpoint: patch_embed.proj.weight has shape {shape}, not "
                              "(width, 3, tubelet, patch, patch)") from None
    numbers = [k.split(".")[1] for k in state if k.startswith("blocks.")]
    odd = next((n for n in numbers if not n.isdigit() or len(n) > 3), None)
    if odd is not None or not dim:  # ("blocks.x.foo"; "blocks.100000000.x" would build a hundred million blocks)
        raise CheckpointError(f"not a VideoMAE ViT checkpoint: {'block ' + repr(odd) if odd else 'width 0'}")
    depth = 1 + max(int(n) for n in numbers)
    heads = STANDARD_HEADS.get(dim, max(1, dim // 64))
    return BackboneConfig(
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=hidden / dim,
        patch_size=int(patch),
        tubelet_size=int(tubelet),
        init_values=1.0 if "blocks.0.gamma_1" in state else 0.0,
    )


__all__ = [
    "CheckpointError",
    "VideoMAEEncoder",
    "map_checkpoint",
    "official_state_dict",
    "position_table",
    "read_official_checkpoint",
    "sinusoid_table",
    "infer_backbone_config",
]
