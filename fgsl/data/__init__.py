"""Data: the annotation table, data-set readers, video sources, synthetic MEs, ``--data`` specs.

``table`` (the one annotation table), ``datasets`` (CAS(ME)^2, CAS(ME)^3, SAMM-LV readers),
``frames`` (video files and numbered-frame folders), ``video`` (model-ready crops),
``synthetic`` (injected micro-expressions), ``spec`` (what a training run reads).
"""
