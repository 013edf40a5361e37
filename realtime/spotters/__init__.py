"""Spotters behind one protocol (:mod:`.base`): ``flow`` (default, no weights) and ``fgsl``."""

from __future__ import annotations

import argparse

from engines.base import add_engine_device_flag
from fgsl.cli import UsageError, positive_number

from .base import Spotter

SPOTTERS = ("flow", "fgsl")


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """How the FGSL engine is opened: the same in ``realtime.cam``, ``realtime.bench`` and the demo."""
    parser.add_argument("--allow-untrained", action="store_true",
                        help="let the fgsl spotter use untrained weights (benchmarks only; it says UNTRAINED)")
    parser.add_argument("--preset", help="FGSL preset for --allow-untrained without --weights (default: realtime)")
    parser.add_argument("--backend", default="auto", help="FGSL engine backend (auto, torch, onnxruntime, tensorrt)")
    add_engine_device_flag(parser)


def add_spotter_flags(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`make_spotter` reads, the same in ``realtime.cam`` and ``realtime.bench``."""
    parser.add_argument("--spotter", choices=SPOTTERS, default=None, help="default: fgsl with --weights, else flow")
    parser.add_argument("--weights", help="FGSL run folder (model.safetensors + config.json); selects the fgsl spotter")
    add_engine_flags(parser)
    parser.add_argument("--sensitivity", type=positive_number, default=1.0,
                        help=">1 finds weaker movements, <1 raises fewer false alarms (both spotters)")


def make_spotter(args: argparse.Namespace) -> Spotter:
    """The spotter the command line asks for: ``fgsl`` when weights are given, else ``flow``."""
    name = args.spotter or ("fgsl" if args.weights else "flow")
    if name == "flow":
        if args.weights:
            raise UsageError("--weights selects the fgsl spotter; drop --spotter flow or --weights")
        from .flow import FlowSpotter

        return FlowSpotter(sensitivity=args.sensitivity)
    from .fgsl import FGSLSpotter

    return FGSLSpotter.from_args(args)
