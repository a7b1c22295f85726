"""The run lock: one training at a time per run folder, across processes (the app's jobs, `train`, the demo build)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no file locks; a job's liveness is then its pid alone
    fcntl = None

LOCK_ENV = "HUSE_RUN_LOCK_FD"  # a step started by a job inherits the job's lock on this file descriptor


class JobRunning(RuntimeError):
    """A training is already writing into that run folder."""


def lock_path(run_dir: str | Path) -> Path:
    """The run's lock file, beside the run folder (also pipeline.build_lock's)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def try_lock(run_dir: Path) -> int | None:
    """An open descriptor holding the run's lock, or None when another process holds it (or there is no fcntl)."""
    if fcntl is None:
        return None
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def lock_held(run_dir: Path) -> bool:
    """Whether some process holds the run's lock (False where there are no file locks)."""
    if fcntl is None:
        return False
    try:  # no lock file: never trained by a job or `train` (and reading must not litter the runs folder)
        fd = os.open(lock_path(run_dir), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
    return False


def _inherited_lock(run_dir: Path) -> bool:
    """Whether this process was started by a job holding `run_dir`'s lock (LOCK_ENV names that descriptor)."""
    fd = os.environ.get(LOCK_ENV, "")
    try:
        held, path = os.fstat(int(fd)), os.stat(lock_path(run_dir))
    except (ValueError, OSError):
        return False
    return (held.st_dev, held.st_ino) == (path.st_dev, path.st_ino)


@contextmanager
def training_lock(run_dir: str | Path):
    """Hold `run_dir`'s lock while training into it (`train` on the command line); a second training refuses."""
    run_dir = Path(run_dir)
    if fcntl is None or _inherited_lock(run_dir):
        yield
        return
    fd = try_lock(run_dir)
    if fd is None:
        raise JobRunning(f"another process is training into {run_dir} (the app or a terminal); wait for it to end "
                         f"or stop it, or choose another --out")
    try:
        yield
    finally:
        os.close(fd)
