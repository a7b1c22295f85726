"""huse_core: train a shop's own image + text HUSE model, then classify, search and map its catalogue."""

import os

# OpenMP's default busy-wait makes torch's threads spin while they wait; on a shared 2-core machine that
# measured ~6x more CPU per training step and ~5x longer steps. Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
