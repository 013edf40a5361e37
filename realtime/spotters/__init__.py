"""Spotters (``flow`` default, ``fgsl``) behind one protocol (issue #5; not implemented yet)."""
