"""What every benchmark shares: the repo's paths, the real catalogue's location, the machine it ran on, result files.

Benchmarks run as `python bench/NAME.py ...` (studies as `python -m bench.studies.NAME`), so `from common import ...`
needs no sys.path edit. They measure the huse_core that Python imports: the editable install that
`pip install -r requirements.txt` makes of this checkout, or this checkout with `PYTHONPATH=.`; importing this module
stops a benchmark, with that fix, when huse_core would come from another checkout. Each writes its
result with `write_result(bench, variant, payload, markdown)` to bench/results/<bench>/<variant>.json (+ .md),
overwriting an earlier run of the same variant (git keeps the history), and stamps it with `provenance()`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-product-images-small.tar.gz"

log = logging.getLogger("bench")


def check_checkout() -> None:
    """Stop when `import huse_core` would load another checkout than this one: its figures would be mislabelled."""
    spec = importlib.util.find_spec("huse_core")
    found = Path(spec.origin).resolve().parent if spec is not None and spec.origin else None
    if found != ROOT / "huse_core":
        raise SystemExit(f"bench/ measures {ROOT / 'huse_core'}, but Python imports huse_core from {found or 'nowhere'}"
                         f" — install this checkout (pip install -e .) or run with PYTHONPATH={ROOT}")


check_checkout()


def resolve_catalog(data: Path | str = DEFAULT_DATA) -> Path:
    """The catalogue CSV: `data` itself, metadata.csv inside a folder, or inside an unpacked tarball.

    A tarball is unpacked once (tarfile filter="data") into a temp folder named by its path, size and mtime, so
    later runs reuse it and the decoded-photo cache beside it.
    """
    data = Path(data).expanduser()
    if not data.exists():
        raise FileNotFoundError(f"catalogue not found: {data} — pass --data with the catalogue CSV (metadata.csv), "
                                f"its folder, or the fashion-product-images-small.tar.gz tarball")
    if data.is_dir():
        return _find_csv(data)
    if not tarfile.is_tarfile(data):
        return data
    st = data.stat()
    key = hashlib.sha1(f"{data.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
    dest = Path(tempfile.gettempdir()) / f"huse-quality-{key}"
    if not (dest / ".unpacked").is_file():
        log.info("unpacking %s into %s", data, dest)
        part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        with tarfile.open(data) as tar:
            tar.extractall(part, filter="data")
        (part / ".unpacked").touch()
        if dest.exists():  # another run finished first: keep its copy
            shutil.rmtree(part)
        else:
            part.rename(dest)
    return _find_csv(dest)


def _find_csv(folder: Path) -> Path:
    found = sorted(folder.rglob("metadata.csv"), key=lambda p: len(p.parts)) or sorted(
        folder.rglob("*.csv"), key=lambda p: len(p.parts))
    if not found:
        raise FileNotFoundError(f"no catalogue CSV under {folder} — pass --data with the CSV itself")
    return found[0]


def cpu_model() -> str:
    """The CPU's model name as lscpu reports it (platform.processor() is often empty on Linux)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checkout's commit (with '+dirty' when files differ from it), or 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command() -> str:
    """How this benchmark was started, as a reader would retype it from the repository root."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m bench.studies.NAME
        head = ["-m", spec.name]
    else:
        script = Path(sys.argv[0]).resolve()
        head = [str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]]
    return "python " + " ".join(shlex.quote(a) for a in head + sys.argv[1:])


def provenance() -> dict:
    """Command, commit, date, CPU model and cores, and the 1-minute load when the result was written."""
    return {
        "command": command(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def write_result(bench: str, variant: str, payload: dict, markdown: str | None = None) -> Path:
    """Write bench/results/<bench>/<variant>.json (+ .md), each through a temp name; returns the JSON path.

    `payload` gains a "provenance" entry; the markdown, when given, opens with the same provenance lines.
    """
    folder = RESULTS / bench
    folder.mkdir(parents=True, exist_ok=True)
    prov = payload.setdefault("provenance", provenance())
    out = folder / f"{variant}.json"
    _write(out, json.dumps(payload, indent=2, default=str) + "\n")
    if markdown is not None:
        head = "\n".join(f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in prov.items())
        _write(out.with_suffix(".md"), f"{head}\n\n{markdown.rstrip()}\n")
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
