"""Training as a background job: `python -m huse_core train …` (then evaluate, index) in its own process.

The app starts a job and can then be closed: the job runs in a new session (its own process group), writes its
output to `job.log`, its state to `job.json` and its live progress (step losses, epoch accuracies) to
`progress.jsonl` in the run folder, and holds the run's lock (the one `pipeline.build_lock` and `train` take)
while it lives, so no second training writes into the same folder. `status` reads those files and the lock: a job
whose process is gone without finishing is "interrupted", and `resume` carries it on from the last finished epoch.

    start_training(run_dir, data_cfg, model_cfg, loss_cfg, train_cfg, index=True)   # returns at once
    status(run_dir)    # JobStatus: running | done | failed | interrupted; None: no job, nothing to resume
    events(run_dir)    # the progress events written so far (train's callback dicts, plus the job's steps)
    latest(run_dir)    # only the newest of them (the last training step, the last event): cheap to poll
    stop(run_dir)      # ends the job's process group; the run stays resumable
    resume(run_dir)    # a new job: `train --resume` (or the stored start), evaluate, index
"""

from .command import config_argv, train_argv
from .control import (DONE, FAILED, INTERRUPTED, RUNNING, JobStatus, dismiss, is_running, list_jobs, resume, start,
                      start_training, status, stop)
from .lock import JobRunning, lock_path, training_lock
from .progress import events, latest, log_tail, progress_writer

__all__ = ["DONE", "FAILED", "INTERRUPTED", "RUNNING", "JobRunning", "JobStatus", "config_argv", "dismiss", "events",
           "is_running", "latest", "list_jobs", "lock_path", "log_tail", "progress_writer", "resume", "start",
           "start_training", "status", "stop", "train_argv", "training_lock"]
