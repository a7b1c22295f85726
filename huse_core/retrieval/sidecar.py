"""What the Annoy and faiss indexes share: the JSON sidecar's ids and sizes, its checked reading, and the switch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts import write_json
from .layout import INDEX_FORMAT, IndexMissingError, StaleIndexError


class SidecarIndex:
    """A vector index over unit rows described by its sidecar `<name>.<suffix>.json`: format, file, file_bytes,
    dim, metric, n_items, the model fingerprint, the measured recall@10 and the row -> product id map."""

    def __init__(self, meta: dict, sidecar: Path):
        self.meta, self.sidecar = meta, sidecar
        self.ids = np.asarray(meta["ids"], dtype=object)

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def commit(self, data: Path) -> None:
        """Write the sidecar, the one atomic step that switches readers to the build in `data`, then remove the
        older builds beside it (a process still serving one keeps its open file or mmap: POSIX)."""
        write_json(self.sidecar, self.meta)
        for old in data.parent.glob(f"{data.name.split('.')[0]}.*{data.suffix}"):
            if old.name != data.name:
                try:
                    old.unlink()
                except OSError:
                    pass


def read_checked(sidecar: Path, expected: dict[str, tuple[str, object]], hint: str, what: str) -> tuple[dict, Path]:
    """(meta, data file) of a sidecar whose keys hold the expected values ({key: (name in the message, value)}),
    format INDEX_FORMAT included, and whose data file has the recorded size. Raises IndexMissingError when there
    is no sidecar, StaleIndexError naming every mismatch (or the damage) and `hint`, the rebuild command."""
    if not sidecar.is_file():
        raise IndexMissingError(f"no {what} at {sidecar.parent}: {hint}")
    expected = {"format": ("format", INDEX_FORMAT), **expected}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        data = sidecar.parent / meta["file"]
        stale = [(name, meta.get(key), want) for key, (name, want) in expected.items() if meta.get(key) != want]
        size = data.stat().st_size if data.is_file() else None
        if size != meta["file_bytes"]:
            stale.append(("file size", size, meta["file_bytes"]))
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise StaleIndexError(f"{sidecar} is damaged ({err}); {hint}") from None
    if stale:
        found = "; ".join(f"{name} {got!r} != expected {want!r}" for name, got, want in stale)
        raise StaleIndexError(f"the index {sidecar.with_suffix('')} does not match this run ({found}); it was "
                              f"built for another model or is incomplete: {hint}")
    return meta, data
