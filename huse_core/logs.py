"""Where huse_core's messages go: each module logs to logging.getLogger(__name__); the CLI and the app send them to
stderr; a program embedding huse_core (a Ray worker, a torchrun rank, a web app) routes the "huse_core" logger."""

from __future__ import annotations

import logging
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
    """Show huse_core's progress, notes and warnings on stderr as plain lines (once, however often it is called)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
