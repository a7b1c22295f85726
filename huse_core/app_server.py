"""Starting and stopping the workbench app (`streamlit run app.py`) on a loopback port: browser tests and benches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(app: str | Path, env: dict[str, str | None] | None = None, port: int = 0,
                     log_path: str | Path | None = None, timeout: float = 120.0) -> Iterator[str]:
    """`streamlit run app` on 127.0.0.1:`port` (0 = a free one), started in the app's folder so its
    .streamlit/config.toml applies, with `env` over this process's environment (a None value removes that
    variable). Yields the server's URL once its health check answers, and stops the server on leaving.

    Its output goes to `log_path` (default: a temporary file, removed afterwards); a server that exits or
    doesn't answer within `timeout` seconds raises RuntimeError with the end of that log."""
    app = Path(app).resolve()
    port = port or free_port()
    merged = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    temporary = log_path is None
    if temporary:
        fd, name = tempfile.mkstemp(prefix="streamlit-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
                                     "--server.address", "127.0.0.1", "--server.headless", "true",
                                     "--browser.gatherUsageStats", "false"], cwd=app.parent, env=merged, stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                _wait_healthy(proc, url, timeout, log_path)
                yield url
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        if temporary:
            log_path.unlink(missing_ok=True)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            why = (f"exited with code {proc.returncode}" if proc.poll() is not None
                   else f"no answer in {timeout:.0f} s")
            raise RuntimeError(f"streamlit did not start ({why}); its log {log_path} ends:\n"
                               f"{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
