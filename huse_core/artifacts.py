"""Crash-safe artifact writing (temp name + rename) and file fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write) -> Path:
    """Call write(tmp_path), then rename over `path`: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the rename must not land before the data does
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _plain(obj: Any) -> Any:
    """A dataclass (a Head, a config) as its dict of fields; json.dump calls this for what it can't write itself."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (UTF-8, indented, non-ASCII kept readable)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=_plain)

    return atomic_write(path, write)


def read_json(path: str | Path) -> dict:
    """The JSON object a file holds; a ValueError naming the file when it is not valid JSON or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not the object it should")
    return data


def save_torch(path: str | Path, obj: Any) -> Path:
    """torch.save atomically; load back with `load_torch` (weights_only)."""
    import torch  # here, not at import: the index and the app's light pages need no torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | Path) -> Any:
    """torch.load restricted to tensors and plain containers: a crafted pickle can't run code."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for code-running pickles, RuntimeError for corrupt files
        raise ValueError(f"{path} is not a valid checkpoint (it was refused unopened: {type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})") from err


def save_npy(path: str | Path, array) -> Path:
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)


def texts_key(prefix: str, texts) -> str:
    """16 hex digits naming a cache of these exact texts, in this order, under `prefix` (the encoder or settings):
    SHA-1 over the prefix and each text's UTF-8 bytes, NUL-separated."""
    key = hashlib.sha1(prefix.encode())
    for t in texts:
        key.update(str(t).encode("utf-8", "surrogatepass") + b"\x00")
    return key.hexdigest()[:16]


def file_sha(path: str | Path, n_chars: int = 16) -> str:
    """The first `n_chars` hex digits of a file's SHA-256: a model fingerprint for indexes and caches."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n_chars]
