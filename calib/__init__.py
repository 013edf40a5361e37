"""Calibration data and INT8/FP8 quantisation for FGSL engines (arrives with the engines issue #6).

Nothing is implemented here yet; the package exists so the layout and packaging are final.
"""
