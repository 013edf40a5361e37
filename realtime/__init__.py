"""The live spotter: capture -> faces -> buffers -> spotter -> events -> sinks (issue #5).

Not implemented yet; ``make run`` meanwhile runs offline FGSL inference (``fgsl.infer``) on
the bundled sample video, clearly labelled.
"""
