"""The FGSL network: frozen VideoMAE V2 encoder + IGA side branches + pyramid + FIFM + heads.

The forward pass is defined as the composition of two parts so that there is one source of
truth for the whole model and for the live spotter's cached path:

* :meth:`FGSL.encode_chunk` runs the frozen encoder on one 16-frame chunk and returns its
  pooled final features and the pooled outputs of the tapped blocks;
* :meth:`FGSL.decode_window` takes those for a whole window (chunks concatenated in time)
  and runs the trainable part: IGA branches, projection transformer, pyramid, FIFM, heads.

Engine I/O (docs/design.md): ``clips`` float32 ``[B, 3, T, H, W]`` normalised with ImageNet
mean/std -> ``scores [B, N, K]`` logits and ``offsets [B, N, 2]`` (>= 0, in units of each
level's stride) over the N points of all pyramid levels, level 0 first.
"""

from __future__ import annotations

from .startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import torch
    from torch import nn

    from .backbone import VideoMAEEncoder
    from .config import CHUNK_FRAMES, IMAGENET_MEAN, IMAGENET_STD, FGSLConfig
    from .fifm import FIFM
    from .heads import DecoupledHeads
    from .iga import IGAStack
    from .neck import PyramidNeck

__all__ = ["FGSL", "IMAGENET_MEAN", "IMAGENET_STD", "InputShapeError", "build"]


class InputShapeError(ValueError):
    """Clips whose shape does not match the config (the message gives both)."""


class FGSL(nn.Module):
    def __init__(self, cfg: FGSLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        self.encoder = VideoMAEEncoder(b, cfg.image_size, cfg.iga_blocks)
        self.encoder.requires_grad_(False)
        self.iga = IGAStack(b.embed_dim, len(cfg.iga_blocks), cfg.iga_dim, cfg.iga_kernel)
        self.neck = PyramidNeck(b.embed_dim, cfg.neck_dim, cfg.neck_heads, cfg.neck_layers, cfg.attn_window, cfg.num_levels)
        self.fifm = FIFM(cfg.neck_dim, cfg.fifm_blocks, cfg.fifm_mlp_ratio, cfg.tokens, cfg.fifm_form)
        self.heads = DecoupledHeads(cfg.neck_dim, cfg.num_classes, cfg.head_layers, cfg.num_levels)

    # ------------------------------------------------------------------ structure
    def train(self, mode: bool = True) -> "FGSL":
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def set_fifm_form(self, form: str) -> None:
        """``"freq"`` (rFFT/irFFT) or ``"conv"`` (circular conv, plain ONNX); equal outputs."""
        self.fifm.set_form(form)

    # ------------------------------------------------------------------ the two parts
    def encode_chunk(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, 16, H, W]`` -> (final ``[B, t, D]``, taps ``[B, n_taps, t, D]``)."""
        return self.encoder(chunk)

    def embed(self, final: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        """Frozen features plus the summed IGA corrections: ``[B, L, D]``."""
        return final + self.iga(taps)

    def decode_window(self, final: torch.Tensor, taps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Window features (``[B, L, D]``, ``[B, n_taps, L, D]``) -> ``scores``, ``offsets``."""
        levels = self.neck(self.embed(final, taps))
        cls, spot = self.fifm(levels)
        scores, offsets = self.heads(levels, cls, spot)
        return {"scores": scores, "offsets": offsets}

    def encode_window(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode every 16-frame chunk of ``clips`` and lay the results out along time."""
        self.check_clips(clips)
        b, c, t, h, w = clips.shape
        n = t // CHUNK_FRAMES
        chunks = clips.reshape(b, c, n, CHUNK_FRAMES, h, w).transpose(1, 2).reshape(b * n, c, CHUNK_FRAMES, h, w)
        final, taps = self.encode_chunk(chunks)
        steps = final.shape[1]
        final = final.reshape(b, n * steps, -1)
        taps = taps.reshape(b, n, taps.shape[1], steps, -1).transpose(1, 2).reshape(b, taps.shape[1], n * steps, -1)
        return final, taps

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode_window(*self.encode_window(clips))

    def check_clips(self, clips: torch.Tensor) -> None:
        want = (3, self.cfg.window_frames, self.cfg.image_size, self.cfg.image_size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
            raise InputShapeError(
                f"clips must be [B, {', '.join(map(str, want))}] for preset {self.cfg.name!r}, got {list(clips.shape)}"
            )

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Copy converted VideoMAE V2 weights (see :mod:`fgsl.convert_backbone`) into the encoder."""
        from .backbone import map_checkpoint

        mapped, _ = map_checkpoint(state, self.encoder)
        self.encoder.load_state_dict(mapped, strict=True)


def build(cfg: FGSLConfig, seed: int | None = 0) -> FGSL:
    """A fresh network; ``seed`` makes random initialisation reproducible."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return FGSL(cfg).eval()
    return FGSL(cfg).eval()


if __name__ == "__main__":  # python -m fgsl.model --preset NAME
    with startup_imports(__name__):  # fgsl.summary's imports, before its run() catches Ctrl-C (fgsl.startup)
        from .summary import main

        quiet_exit(main())
