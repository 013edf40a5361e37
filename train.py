"""``python train.py ...``: the entry point the FGSL paper's users expect; same as ``python -m fgsl.train``."""

from fgsl.train import main

if __name__ == "__main__":
    raise SystemExit(main())
