"""A classification head (a catalogue column and its classes): the one type the catalogue, the model, a run and the
app pass around; run.json stores each as a dict and `Head.from_dict` reads it back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

KINDS = ("single", "multi")


@dataclass
class Head:
    """One classification target: a catalogue column and its classes."""

    name: str  # column name, e.g. "articleType"
    kind: str  # "single" | "multi"
    classes: list[str] = field(default_factory=list)  # class index -> name
    level: int | None = None  # 0 = coarsest hierarchy level, None for attributes / multi-label

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"head {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @classmethod
    def from_dict(cls, d: Mapping) -> Head:
        """A head as run.json stores it (name, kind, classes, and level where it has one)."""
        level = d.get("level")
        return cls(str(d["name"]), str(d["kind"]), [str(c) for c in d["classes"]],
                   None if level is None else int(level))

    def to_dict(self) -> dict:
        """The JSON-able dict run.json stores."""
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes), "level": self.level}

    # Read like the dicts run.json holds (h["name"], h.get("level")), so code and scripts written against those dicts
    # keep working on Head objects; new code reads the attributes.
    def __getitem__(self, key: str):
        if key not in FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in FIELDS else default

    def __contains__(self, key: object) -> bool:
        return key in FIELDS


FIELDS = frozenset(f.name for f in dataclasses.fields(Head))


def as_heads(heads: Iterable[Head | Mapping]) -> list[Head]:
    """Heads from Head objects or run.json's dicts (a caller may pass either)."""
    return [h if isinstance(h, Head) else Head.from_dict(h) for h in heads]
