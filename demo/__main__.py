"""``python -m demo``: serve the browser demo (see :mod:`demo.app`)."""

from .app import main

raise SystemExit(main())
