"""Spotters behind one protocol (:mod:`.base`): ``flow`` (default, no weights) and ``fgsl``."""

from __future__ import annotations

import argparse

from engines.base import add_engine_device_flag
from fgsl.cli import UsageError, first_flag_given, number_between

from .base import Spotter

SPOTTERS = ("flow", "fgsl")

#: ``--sensitivity``'s range. 1000 makes random (``--allow-untrained``) weights report, for
#: pipeline checks; beyond 1e-3..1e3 the flow threshold (3 deviations / s) or the FGSL odds
#: mean nothing (1e-300 overflows the flow spotter's float32 signal into a numpy warning).
MIN_SENSITIVITY, MAX_SENSITIVITY = 1e-3, 1e3


def fgsl_only_flag(args: argparse.Namespace) -> str | None:
    """The first flag only the FGSL spotter reads (:func:`add_engine_flags`,
    :func:`add_cache_flag`) that ``args`` sets, or None (:func:`fgsl.cli.first_flag_given`):
    given while the flow spotter runs, they would be ignored without a word (``--backend bogus``
    ran the flow spotter, exit 0)."""
    return first_flag_given(args, add_engine_flags, add_cache_flag)


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """How the FGSL engine is opened: the same in ``realtime.cam``, ``realtime.bench`` and the demo."""
    parser.add_argument("--allow-untrained", action="store_true",
                        help="let the fgsl spotter use untrained weights (benchmarks only; it says UNTRAINED)")
    parser.add_argument("--preset", help="FGSL preset for --allow-untrained without --weights (default: realtime)")
    parser.add_argument("--backend", default="auto", help="FGSL engine backend (auto, torch, onnxruntime, tensorrt)")
    add_engine_device_flag(parser)


def add_cache_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-cache`` (``realtime.cam``; ``realtime.bench`` times both ways itself)."""
    parser.add_argument("--no-cache", action="store_true",
                        help="FGSL: recompute every chunk of every window (default: encode each 16-frame chunk once)")


def add_spotter_flags(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`make_spotter` reads, the same in ``realtime.cam`` and ``realtime.bench``."""
    parser.add_argument("--spotter", choices=SPOTTERS, default=None, help="default: fgsl with --weights, else flow")
    parser.add_argument("--weights", help="FGSL run folder (model.safetensors + config.json); selects the fgsl spotter")
    add_engine_flags(parser)
    parser.add_argument("--sensitivity", type=number_between(MIN_SENSITIVITY, MAX_SENSITIVITY), default=1.0,
                        help=f">1 finds weaker movements, <1 raises fewer false alarms (both spotters; "
                             f"{MIN_SENSITIVITY:g} to {MAX_SENSITIVITY:g})")


def make_spotter(args: argparse.Namespace) -> Spotter:
    """The spotter the command line asks for: ``fgsl`` when weights are given, else ``flow``,
    which refuses the FGSL-only flags rather than ignore them."""
    name = args.spotter or ("fgsl" if args.weights else "flow")
    if name == "flow":
        if args.weights:
            raise UsageError("--weights selects the fgsl spotter; drop --spotter flow or --weights")
        if flag := fgsl_only_flag(args):
            raise UsageError(f"{flag} concerns the fgsl spotter (pass --weights, or --spotter fgsl --allow-untrained)")
        from .flow import FlowSpotter

        return FlowSpotter(sensitivity=args.sensitivity)
    from .fgsl import FGSLSpotter

    return FGSLSpotter.from_args(args)
