"""Spotters behind one protocol (:mod:`.base`): ``flow`` (default, no weights) and ``fgsl``."""

from __future__ import annotations

import argparse

from fgsl.cli import UsageError

from .base import Spotter

SPOTTERS = ("flow", "fgsl")


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
