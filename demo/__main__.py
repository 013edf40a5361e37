"""``python -m demo``: serve the browser demo (see :mod:`demo.app`).

Gradio and matplotlib are the ``[demo]`` extra, not the core install: without them this says
so in one ``error:`` line (status 2) instead of an import traceback.
"""

import sys

#: The distribution and extra that bring the demo's own dependencies (``pyproject.toml``).
INSTALL_HINT = "pip install 'fgsl-spotter[demo]'"


def _missing_extra() -> str | None:
    """The ``error:`` line for the first of the demo's extra modules that cannot be imported,
    or ``None`` when all import."""
    for name in ("gradio", "matplotlib"):
        try:
            __import__(name)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == name:
                return f"the demo needs {name}: {INSTALL_HINT}"
            # installed but broken (one of its own dependencies missing or the wrong version)
            why = (str(exc).strip().splitlines() or [""])[0]
            return f"{name} is installed but cannot be imported ({type(exc).__name__}: {why}): {INSTALL_HINT}"
    return None


_problem = _missing_extra()
if _problem is not None:
    print(f"error: {_problem}", file=sys.stderr, flush=True)
    raise SystemExit(2)

from .app import main  # noqa: E402

raise SystemExit(main())
