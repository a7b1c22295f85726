"""Where huse_core's messages go: each module logs to logging.getLogger(__name__); the CLI and the app send them to
stderr; a program embedding huse_core (a Ray worker, a torchrun rank, a web app) routes the "huse_core" logger."""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "huse_core"


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a message comes (a redirected stream, a test's capture)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler sets it; the current sys.stderr is always used
        pass


def to_stderr(level: int = logging.INFO) -> logging.Logger:
    """Show huse_core's progress, notes and warnings on stderr as plain lines (one handler, however often called).

    Under torchrun (WORLD_SIZE > 1) rank 0 reports the run's progress once, as a single process would; the other
    ranks show warnings only, each line naming its rank."""
    logger = logging.getLogger(LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        logger.addHandler(handler)
    rank, world = int(os.environ.get("RANK") or 0), int(os.environ.get("WORLD_SIZE") or 1)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s" if world > 1 and rank else "%(message)s"))
    logger.setLevel(level if rank == 0 else max(level, logging.WARNING))
    return logger
