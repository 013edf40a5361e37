"""The live spotter: capture -> faces -> buffers -> spotter -> events -> sinks (docs/realtime.md).

``python -m realtime.cam`` runs it on a webcam or a file, ``python -m realtime.bench`` measures
it; :class:`realtime.pipeline.Pipeline` is the one place the stages are wired together.
"""
