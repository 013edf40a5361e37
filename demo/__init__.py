"""The Gradio browser demo of the live spotter: ``python -m demo`` (live webcam and video upload).

All the spotting it shows lives in :mod:`realtime`; this package only wires it to a page
(:mod:`demo.app`), keeps one pipeline per browser session (:mod:`demo.session`), runs uploaded
videos (:mod:`demo.upload`), draws the signal plots (:mod:`demo.plots`), and measures the live
tab in a real browser (:mod:`demo.bench`, :mod:`demo.browser`). See ``docs/demo.md``.
"""
