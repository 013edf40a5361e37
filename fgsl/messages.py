"""Library errors folded into our one-line messages.

Light on purpose (no torch, no project imports): ``fgsl.weights``, ``fgsl.backbone`` and
``realtime.face`` need these on their failure paths, and ``fgsl.cli`` imports them, so
they cannot live in ``fgsl.cli`` without a circular import.
"""

from __future__ import annotations


def first_line(exc: BaseException, *, skip_heading: bool = False) -> str:
    """The first line of ``exc``'s message (its type name when it has none), without a
    trailing colon: a library's multi-line error (MediaPipe, ONNX Runtime) folded into our
    one-line errors. With ``skip_heading`` a first line that ends in a colon is taken as a
    heading and the line under it is given instead: torch's ``load_state_dict`` says
    "Error(s) in loading state_dict for FGSL:" and only its second line says which tensor."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if skip_heading and len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return (lines[0].rstrip(":").strip() if lines else "") or type(exc).__name__


def explain(exc: BaseException) -> str:
    """``Type: first line`` of a library's exception, for "(why)" in our own error lines; only
    ``Type`` when it has no message (not "KeyError: KeyError")."""
    name = type(exc).__name__
    text = first_line(exc)
    return name if text == name else f"{name}: {text}"
