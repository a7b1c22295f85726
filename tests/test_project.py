"""The habits of a maintained project: one version, ruff's target and rules as the project declares, ruff in CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once_and_the_cli_reports_it(capsys):
    import huse_core
    from huse_core.cli import main

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "huse_core.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", huse_core.__version__)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"huse {huse_core.__version__}"


def test_ruff_targets_requires_python_checks_broad_excepts_and_runs_in_ci():
    ruff = tomllib.loads((ROOT / "ruff.toml").read_text())
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ruff["target-version"] == "py" + re.fullmatch(r">=\s*(\d+)\.(\d+)", floor).expand(r"\1\2")
    assert "BLE" in ruff["lint"]["select"]  # the `# noqa: BLE001 - why` comments mean something
    ci = (ROOT / ".ci" / "run").read_text()
    assert "ruff check ." in ci and ci.index("ruff check .") < ci.index("pytest")


def test_ruff_passes():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 and "No module named ruff" in done.stderr:
        pytest.skip("ruff is not installed (pip install -e .[test])")
    assert done.returncode == 0, done.stdout[-3000:]


def test_library_progress_goes_through_logging_to_stderr(capsys, caplog):
    """A library function's progress is a log record (an embedding program can route it) shown on stderr."""
    import logging
    from types import SimpleNamespace

    import numpy as np

    from huse_core.training.validation import validation_rows

    with caplog.at_level(logging.INFO, logger="huse_core"):
        picked = validation_rows(np.arange(50), SimpleNamespace(val_max=10, seed=0), progress=True)
    assert len(picked) == 10
    assert [r.name for r in caplog.records] == ["huse_core.training.validation"]
    assert "a seeded sample of 10 of the 50 validation products" in capsys.readouterr().err


def test_under_torchrun_rank_0_reports_progress_and_other_ranks_only_warnings_naming_themselves(monkeypatch, capsys):
    import logging

    from huse_core.logs import to_stderr

    log = logging.getLogger("huse_core.some_module")
    try:
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        to_stderr()
        log.info("epoch 1 done")
        log.warning("disk nearly full")
        assert capsys.readouterr().err == "[rank 1] disk nearly full\n"
        monkeypatch.setenv("RANK", "0")
        to_stderr()
        log.info("epoch 1 done")
        assert capsys.readouterr().err == "epoch 1 done\n"  # as a single process prints it
    finally:
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        to_stderr()  # back to plain lines for the tests after this one


def test_help_opens_with_usage_huse_and_speaks_to_users(capsys):
    """`huse --help` and each command's help: the program's name, no notes to maintainers, no lab history."""
    from huse_core.cli import COMMANDS, main

    texts = []
    for argv in [["--help"]] + [[c.__name__.removeprefix("add_").removesuffix("_command").replace("_", "-"),
                                 "--help"] for c in COMMANDS]:
        with pytest.raises(SystemExit):
            main(argv)
        texts.append(capsys.readouterr().out)
    assert texts[0].startswith("usage: huse ") and all(t.startswith("usage: huse ") for t in texts[1:])
    for text in texts:
        assert not re.search(r"20\d\d-\d\d-\d\d|issue \d+|bench/results|Over \d+ lines", text), text[:300]
