"""Review decisions stored with the run (SQLite) and the corrected catalogue they export.

Why SQLite in WAL mode, as for added products: two app sessions, the CLI and a restart all see one store; each
save is one transaction, writers queue on SQLite's lock, and a killed process leaves the last committed state.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pandas as pd

from ..data.tables import pick_column, read_table
from ..run import read_meta

DECISIONS = ("accept", "keep", "skip")  # accept: apply the suggestion; keep: the catalogue is right; skip: later
_SCHEMA = """CREATE TABLE IF NOT EXISTS decisions (
    kind TEXT NOT NULL, id TEXT NOT NULL, head TEXT NOT NULL,
    decision TEXT NOT NULL, current TEXT NOT NULL, suggested TEXT NOT NULL, decided REAL NOT NULL,
    PRIMARY KEY (kind, id, head))"""


def decisions_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "audit" / "decisions.sqlite"


def _connect(run_dir: str | Path) -> sqlite3.Connection:
    path = decisions_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 60000")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    con.execute(_SCHEMA)
    return con


def record(run_dir: str | Path, findings: list[dict], decision: str) -> int:
    """Store `decision` for each finding ({"kind", "id", "head", "current", "suggested"}), replacing an earlier one;
    one transaction. Returns how many were stored."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}; choose {', '.join(DECISIONS)}")
    now = time.time()
    rows = [(f["kind"], str(f["id"]), f["head"], decision, str(f["current"]), str(f["suggested"]), now)
            for f in findings]
    con = _connect(run_dir)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    finally:
        con.close()
    return len(rows)


def read_decisions(run_dir: str | Path) -> pd.DataFrame:
    """Every stored decision: kind, id, head, decision, current, suggested, decided (unix time)."""
    cols = ["kind", "id", "head", "decision", "current", "suggested", "decided"]
    if not decisions_path(run_dir).is_file():
        return pd.DataFrame(columns=cols)
    con = _connect(run_dir)
    try:
        return pd.DataFrame(con.execute(f"SELECT {', '.join(cols)} FROM decisions ORDER BY decided").fetchall(),
                            columns=cols)
    finally:
        con.close()


def findings_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "audit" / "findings.json"


def save_findings(run_dir: str | Path, rows: list[dict]) -> None:
    """Keep an audit's rows with the run (written to a temp name, then renamed), keyed by the model they came from,
    for the Audit page after a restart and the Map's colouring."""
    from ..artifacts import file_sha, write_json

    path = findings_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"fingerprint": file_sha(Path(run_dir) / "model.pt"), "rows": rows})


def load_findings(run_dir: str | Path) -> list[dict] | None:
    """The rows save_findings kept for the run's current model, else None."""
    from ..artifacts import file_sha, read_json

    try:
        saved = read_json(findings_path(run_dir))
        return saved["rows"] if saved.get("fingerprint") == file_sha(Path(run_dir) / "model.pt") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _label_columns(meta: dict, raw: pd.DataFrame) -> tuple[str | None, list[str]]:
    """(hierarchy column or None, level columns in raw) of a run's catalogue."""
    data = meta["data"]
    levels = [h["name"] for h in sorted((h for h in meta["heads"] if h.get("level") is not None),
                                        key=lambda h: h["level"])]
    hier = pick_column(list(raw.columns), data["hierarchy_col"], (), "hierarchy") if data["hierarchy_col"] else None
    return hier, levels


def export_corrected(run_dir: str | Path, out: str | Path | None = None) -> dict:
    """Write the run's catalogue with the accepted decisions applied to a new CSV (default: beside the input,
    <name>.corrected.csv, so photo paths still resolve): labels and paths set to the suggestion, accepted
    duplicates and photo/title mismatches left out (a mismatched listing needs its photo or title fixed by hand).
    The input file is never written. Returns {"path", "changed", "removed", "rows"}."""
    meta = read_meta(run_dir)
    src = Path(meta["data"]["catalog"])
    out = Path(out) if out else src.with_name(f"{src.stem}.corrected.csv")
    if out.resolve() == src.resolve():
        raise ValueError(f"{out} is the run's input catalogue; export to a new file")
    raw = read_table(src)
    raw.columns = [str(c).strip() for c in raw.columns]
    id_col = pick_column(list(raw.columns), meta["data"]["id_col"], ("id",), "id")
    ids = raw[id_col].astype(str).str.strip() if id_col else pd.Series([str(i + 1) for i in range(len(raw))])
    where = {pid: i for i, pid in enumerate(ids)}
    hier, levels = _label_columns(meta, raw)
    sep = meta["data"]["hierarchy_sep"]
    accepted = read_decisions(run_dir)
    accepted = accepted[accepted["decision"] == "accept"]
    changed, removed = 0, set()
    for f in accepted.itertuples():
        i = where.get(str(f.id))
        if i is None:
            continue
        if f.kind in ("duplicates", "mismatch"):
            removed.add(i)
        elif f.head in ("category path", "hierarchy"):
            parts = [p.strip() for p in str(f.suggested).split("›")]
            if hier:
                raw.iat[i, raw.columns.get_loc(hier)] = sep.join(parts)
            else:
                for col, value in zip(levels, parts):
                    raw.iat[i, raw.columns.get_loc(col)] = value
            changed += 1
        elif f.head in raw.columns:
            raw.iat[i, raw.columns.get_loc(f.head)] = f.suggested
            changed += 1
    result = raw.drop(index=sorted(removed)) if removed else raw
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    result.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return {"path": str(out), "changed": changed, "removed": len(removed), "rows": len(result)}
