"""``python -m fgsl.convert_backbone IN.pth OUT.safetensors``: import official VideoMAE V2 weights.

Reads an official checkpoint with ``torch.load(weights_only=True)`` (no code runs from
the file), unwraps it (``module``/``model``, ``encoder.`` prefix, ``fc_norm`` -> ``norm``),
checks every tensor against the ViT the config describes and writes the encoder weights as
safetensors with the backbone config in the header. Missing, unexpected or mis-shaped keys
fail with one error that lists them; deliberately unused keys (the action classifier
``head.*``, a stored ``pos_embed``, pretraining decoder weights) are printed, not hidden.
FGSL then loads the file with ``fgsl.convert_backbone.load_backbone_file``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import torch

    from fgsl import tensorfile

    from .backbone import (CheckpointError, VideoMAEEncoder, infer_backbone_config, map_checkpoint,
                           read_official_checkpoint)
    from .config import BackboneConfig
    from .model import FGSL

BACKBONE_FORMAT = "fgsl-backbone"


def convert(src: str | Path, dst: str | Path, heads: int | None = None) -> tuple[BackboneConfig, list[str]]:
    """Convert ``src`` (.pth) to ``dst`` (.safetensors); returns (config used, ignored keys).

    The ViT's width, depth, patch and tubelet are read from tensor shapes; the head count
    cannot be, so it follows the standard ViT sizes unless ``heads`` is given.
    """
    state = read_official_checkpoint(src)
    try:  # (what is wrong with the tensors is said there; the line must also say of which file)
        cfg = infer_backbone_config(state)
        if heads is not None:
            if heads < 1 or cfg.embed_dim % heads:
                raise CheckpointError(f"--heads {heads}: must divide the checkpoint's width {cfg.embed_dim}")
            cfg = dataclasses.replace(cfg, num_heads=heads)
        encoder = VideoMAEEncoder(cfg, cfg.pretrain_image_size, taps=())
        mapped, ignored = map_checkpoint(state, encoder)
    except CheckpointError as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": BACKBONE_FORMAT, "backbone": json.dumps(dataclasses.asdict(cfg)), "source": Path(src).name}
    tensorfile.write(mapped, dst, meta)
    return cfg, ignored


def load_backbone_file(path: str | Path) -> tuple[BackboneConfig, dict[str, torch.Tensor]]:
    """Read a converted backbone: (its config, encoder state dict)."""
    meta, state = tensorfile.read(path, CheckpointError, BACKBONE_FORMAT,
                                  "converted backbone (run python -m fgsl.convert_backbone first)")
    return BackboneConfig(**json.loads(meta["backbone"])), state


def load_into(model: FGSL, path: str | Path) -> None:
    """Load a converted backbone into ``model``'s frozen encoder, refusing another ViT."""
    cfg, state = load_backbone_file(path)
    mine = model.cfg.backbone
    fields = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "tubelet_size")
    differ = [f"{f}={getattr(cfg, f)} (model has {getattr(mine, f)})" for f in fields if getattr(cfg, f) != getattr(mine, f)]
    if differ:
        raise CheckpointError(f"{path}: backbone does not fit preset {model.cfg.name!r}: {', '.join(differ)}")
    model.load_backbone(state)


def refuse_run_files(dst: Path) -> None:
    """A weights folder's model or checkpoint (``config.json`` beside it) as ``DST`` would be
    replaced by a bare encoder, and the run would no longer load: refused before reading."""
    from .cli import UsageError
    from .weights import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE

    if dst.name in (WEIGHTS_FILE, CHECKPOINT_FILE) and (dst.parent / CONFIG_FILE).is_file():
        raise UsageError(f"DST {dst} is the {'model' if dst.name == WEIGHTS_FILE else 'checkpoint'} of the weights "
                         f"folder {dst.parent}; writing the backbone there would destroy that run: write it elsewhere")


def main(argv: list[str] | None = None) -> int:
    with startup_imports(__name__):  # before run() below catches Ctrl-C (fgsl.startup)
        from .cli import ArgumentParser, check_output, run

    parser = ArgumentParser(
        prog="python -m fgsl.convert_backbone",
        description="Convert an official VideoMAE V2 .pth checkpoint into encoder safetensors for FGSL.",
    )
    parser.add_argument("src", help="official checkpoint, e.g. vit_s_k710_dl_from_giant.pth")
    parser.add_argument("dst", help="output .safetensors file")
    parser.add_argument("--heads", type=int, help="attention heads (default: inferred from the width)")
    args = parser.parse_args(argv)

    def body(_: list[str] | None) -> int:
        check_output("DST", args.dst, [("SRC", args.src)])
        refuse_run_files(Path(args.dst))
        cfg, ignored = convert(args.src, args.dst, args.heads)
        print(f"wrote {args.dst}: ViT D={cfg.embed_dim} depth={cfg.depth} heads={cfg.num_heads} "
              f"patch={cfg.patch_size} tubelet={cfg.tubelet_size}")
        if ignored:
            print(f"not used by FGSL ({len(ignored)} keys): {', '.join(ignored)}")
        return 0

    return run(body)


if __name__ == "__main__":
    quiet_exit(main())
