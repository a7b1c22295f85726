"""A job's live progress: `train`'s events as JSON lines in the run folder, and the job's output log."""

from __future__ import annotations

import json
import time
from pathlib import Path

LOG, EVENTS = "job.log", "progress.jsonl"


def append_event(path: Path, event: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**event, "time": round(time.time(), 2)}, default=float) + "\n")


def progress_writer(path: str | Path, every: float = 1.0):
    """A `train` callback appending its events to `path` as JSON lines: every event but step losses, and those
    at most once per `every` seconds (and at each epoch's last step), so a long run writes a few MB at most."""
    path, last = Path(path), [0.0]

    def write(event: dict) -> None:
        if event.get("stage") == "train" and event.get("step") != event.get("steps"):
            if time.time() - last[0] < every:
                return
            last[0] = time.time()
        append_event(path, event)

    return write


def events(run_dir: str | Path) -> list[dict]:
    """The job's progress events so far (steps redone after a resume replace the first try's)."""
    try:
        lines = (Path(run_dir) / EVENTS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out: list[dict] = []
    last = (0, 0)
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:  # the line being written
            continue
        if event.get("stage") == "train" and "step" in event:
            at = (event["epoch"], event["step"])
            if at <= last:  # a resume redoes the epoch it was stopped in: drop the first try's steps
                out = [e for e in out if not (e.get("stage") == "train" and "step" in e
                                              and (e["epoch"], e["step"]) >= at)]
            last = at
        out.append(event)
    return out


def latest(run_dir: str | Path, tail: int = 65536) -> dict:
    """The job's newest events, read from the end of progress.jsonl alone (cheap enough to poll every few seconds
    on a long run): {"step": its last training step or None, "last": its last event or None}."""
    try:
        with open(Path(run_dir) / EVENTS, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - tail))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return {"step": None, "last": None}
    found: dict = {"step": None, "last": None}
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:  # cut by the tail, or being written
            continue
        if not isinstance(event, dict):
            continue
        found["last"] = found["last"] or event
        if event.get("stage") == "train" and "step" in event:
            found["step"] = event
            break
    return found


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    """The last lines of the job's output (job.log)."""
    try:
        text = (Path(run_dir) / LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
