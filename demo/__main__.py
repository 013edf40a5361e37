"""``python -m demo``: serve the browser demo (see :mod:`demo.app`).

Gradio and matplotlib are the ``[demo]`` extra, not the core install: without them this says
so in one ``error:`` line (status 2) instead of an import traceback.
"""

import sys

from fgsl.startup import quiet_exit, startup_imports

#: The distribution and extra that bring the demo's own dependencies (``pyproject.toml``).
INSTALL_HINT = "pip install 'fgsl-spotter[demo]'"

# Importing torch, Gradio and MediaPipe takes a few seconds: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from fgsl.cli import missing_module

    _problem = missing_module(("gradio", "matplotlib"), "the demo", INSTALL_HINT)
    if _problem is not None:
        print(f"error: {_problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)

    from .app import main

quiet_exit(main())
