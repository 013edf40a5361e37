"""Gradio browser demo (issue #7; not implemented yet). All logic it shows lives in ``realtime``."""
