"""``python -m fgsl.model --preset NAME``: a table of what a preset costs.

Parameters (total and trainable: adapters + neck + FIFM + heads), multiply-accumulates per
window counted by ``torch.utils.flop_counter`` on the meta device (no memory, no time; FFTs
are not counted, they are a rounding error here), and the engine's input/output shapes.
"""

from __future__ import annotations

import json

from .startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .config import CHUNK_FRAMES, PRESETS, FGSLConfig, preset
    from .model import FGSL


def count_macs(cfg: FGSLConfig) -> dict[str, float]:
    """GMACs of the encoder per 16-frame chunk, of the trainable part, and per window."""
    model = FGSL(cfg).eval().to("meta")
    with torch.device("meta"):
        chunk = torch.zeros(1, 3, CHUNK_FRAMES, cfg.image_size, cfg.image_size)
        with torch.no_grad():
            with FlopCounterMode(display=False) as enc:
                final, taps = model.encode_chunk(chunk)
            final = torch.zeros(1, cfg.tokens, final.shape[-1])
            taps = torch.zeros(1, taps.shape[1], cfg.tokens, taps.shape[-1])
            with FlopCounterMode(display=False) as dec:
                model.decode_window(final, taps)
    enc_g = enc.get_total_flops() / 2e9
    dec_g = dec.get_total_flops() / 2e9
    return {"encoder_per_chunk": enc_g, "decoder_per_window": dec_g, "per_window": enc_g * cfg.chunks + dec_g}


def summarise(cfg: FGSLConfig) -> dict:
    with torch.device("meta"):
        model = FGSL(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    return {
        "preset": cfg.name,
        "backbone": f"ViT D={cfg.backbone.embed_dim} depth={cfg.backbone.depth} heads={cfg.backbone.num_heads}",
        "params_total": total,
        "params_trainable": trainable,
        "gmacs": count_macs(cfg),
        "input": {"clips": [None, 3, cfg.window_frames, cfg.image_size, cfg.image_size], "dtype": "float32"},
        "outputs": {"scores": [None, cfg.num_points, cfg.num_classes], "offsets": [None, cfg.num_points, 2]},
        "levels": cfg.level_lengths(),
        "classes": list(cfg.classes),
    }


def format_table(s: dict) -> str:
    g = s["gmacs"]
    rows = [
        ("preset", s["preset"]),
        ("backbone", f"{s['backbone']} (frozen when trained with pretrained --backbone weights, else trained too)"),
        ("parameters total", f"{s['params_total']:,}"),
        ("parameters trainable", f"{s['params_trainable']:,} (IGA + neck + FIFM + heads; fgsl.train without --backbone trains the encoder too)"),
        ("GMACs per 16-frame chunk", f"{g['encoder_per_chunk']:.4g} (encoder)"),
        ("GMACs per window", f"{g['per_window']:.4g} (decoder part {g['decoder_per_window']:.3g})"),
        ("input clips", f"{s['input']['clips']} {s['input']['dtype']}"),
        ("output scores", f"{s['outputs']['scores']} logits"),
        ("output offsets", f"{s['outputs']['offsets']} (level strides)"),
        ("pyramid points", " + ".join(map(str, s["levels"]))),
        ("classes", ", ".join(s["classes"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    with startup_imports(__name__):  # before run() below catches Ctrl-C (fgsl.startup)
        from .cli import ArgumentParser, HelpFormatter, run

    parser = ArgumentParser(prog="python -m fgsl.model", description="Summarise an FGSL preset.",
                            formatter_class=HelpFormatter)
    parser.add_argument("--preset", default="realtime", choices=sorted(PRESETS), help="model preset")
    parser.add_argument("--window", type=int, help="window length in frames (multiple of 16)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    overrides = {"window_frames": args.window} if args.window is not None else {}

    def body(_: list[str] | None) -> int:
        s = summarise(preset(args.preset, **overrides))
        print(json.dumps(s) if args.json else format_table(s))
        return 0

    return run(body)


if __name__ == "__main__":  # also reachable as python -m fgsl.model
    quiet_exit(main())
