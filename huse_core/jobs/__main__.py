"""The job process: `python -m huse_core.jobs RUN_DIR LOCK_FD`, started by jobs.start / jobs.resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..artifacts import write_json
from .command import STEP_MESSAGES
from .control import DONE, FAILED, INTERRUPTED, JOB, read_job
from .lock import LOCK_ENV
from .progress import EVENTS, LOG, append_event


def _failure_line(text: str) -> str:
    """The CLI's one-line "error: …" from a step's output, else its last line (a traceback's last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1][len("error: "):] if errors else (lines[-1] if lines else "it ended without a message")


def run_job(run_dir: Path, lock_fd: int) -> int:
    """The job process: each planned step as `python -m huse_core …`, recording progress in job.json."""
    job = read_job(run_dir)
    env = dict(os.environ, **({LOCK_ENV: str(lock_fd)} if lock_fd >= 0 else {}))
    for step in job.get("steps", []):
        write_json(run_dir / JOB, job | {"step": step["name"]})
        append_event(run_dir / EVENTS, {"stage": "job", "job_step": step["name"],
                                        "message": STEP_MESSAGES[step["name"]]})
        log_path = run_dir / LOG
        offset = log_path.stat().st_size if log_path.is_file() else 0
        rc = subprocess.call([sys.executable, "-m", "huse_core", *step["argv"]], env=env, stdin=subprocess.DEVNULL,
                             pass_fds=(lock_fd,) if lock_fd >= 0 else ())
        if rc != 0:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                output = f.read()
            state = INTERRUPTED if rc < 0 else FAILED  # a signal (the OOM killer, a kill): resumable as it is
            message = f"the {step['name']} process was killed (signal {-rc})" if rc < 0 else _failure_line(output)
            write_json(run_dir / JOB, job | {"step": step["name"], "state": state, "message": message})
            append_event(run_dir / EVENTS, {"stage": state, "message": message})
            return 1
        job["step"] = ""
    write_json(run_dir / JOB, job | {"state": DONE, "step": ""})
    append_event(run_dir / EVENTS, {"stage": "complete", "message": "trained, evaluated" +
                                     (" and indexed" if job.get("index") else "")})
    return 0


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1]), int(sys.argv[2])))
