"""``python train.py ...``: the entry point the FGSL paper's users expect; same as ``python -m fgsl.train``."""

from fgsl.startup import quiet_exit, startup_imports

# Importing torch takes the first second or two: Ctrl-C then is no bug (fgsl.startup).
with startup_imports(__name__):
    from fgsl.train import main

if __name__ == "__main__":
    quiet_exit(main())
