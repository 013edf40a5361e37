"""Comparing a state dict with what a module expects, for one error that lists everything."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def mismatch(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], limit: int = 12) -> list[str]:
    """Human-readable problems (missing keys, unexpected keys, wrong shapes); empty if none."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(
        f"{k} {tuple(got[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(got) & set(expected)
        if got[k].shape != expected[k].shape
    )
    return [
        f"{name}: {_short(items, limit)}"
        for name, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
        if items
    ]


def _short(items: list[str], limit: int) -> str:
    head = ", ".join(items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
