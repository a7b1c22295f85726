"""The settings a resumed run trains with: the ones it stored, with the few that can safely change applied.

A resumed run keeps its data, model, losses and schedule (its checkpoint was trained with them). How long it goes
on and how many threads it uses can change: RESUMABLE. A flag given with --resume that would change anything else
is refused in one line naming it, before anything is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import read_json
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from .schedule import Schedule

RESUMABLE = ("epochs", "patience", "max_steps", "threads")  # TrainConfig fields a resumed run may change
SECTIONS = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "train": TrainConfig}  # run.json's


@dataclass(frozen=True)
class Given:
    """A setting the user gave explicitly: its flag, and the run.json section and config field it sets."""

    flag: str  # e.g. "--max-steps"
    section: str  # "data", "model", "loss" or "train"
    field: str
    value: object


@dataclass
class Stored:
    """A run's settings as its run.json stored them (resolved, so a resume never re-plans)."""

    meta: dict  # the whole run.json
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    schedule: Schedule | None  # None for runs from before schedules (every setting was given)

    @classmethod
    def read(cls, run_dir: str | Path) -> Stored:
        meta = read_json(Path(run_dir) / "run.json")
        cfgs = {name: from_dict(kind, meta[name]) for name, kind in SECTIONS.items()}
        schedule = Schedule.from_dict(meta["schedule"]) if meta.get("schedule") else None
        return cls(meta, schedule=schedule, **cfgs)

    def changes(self, given: list[Given]) -> list[Given]:
        """The given settings that differ from the stored ones (a flag repeating the stored value changes nothing)."""
        return [g for g in given if not _same(getattr(getattr(self, g.section), g.field), g.value, g.field)]

    def apply(self, given: list[Given]) -> str | None:
        """Applies the RESUMABLE changes in place and returns one line saying which (None when none); raises
        ValueError naming every other change, before anything is written."""
        changed = self.changes(given)
        refused = list(dict.fromkeys(g.flag for g in changed if g.section != "train" or g.field not in RESUMABLE))
        if refused:
            allowed = ", ".join("--" + name.replace("_", "-") for name in RESUMABLE)
            raise ValueError(f"{', '.join(refused)} cannot change when resuming: the run continues with the settings "
                             f"it was trained with (only {allowed} can); train into a new --out to change "
                             f"{'it' if len(refused) == 1 else 'them'}")
        if not changed:
            return None
        was = {g.field: getattr(self.train, g.field) for g in changed}
        self.train = dataclasses.replace(self.train, **{g.field: g.value for g in changed})
        if self.schedule is not None:
            planned = {f: getattr(self.train, f) for f in ("epochs", "patience") if f in was}
            why = dict(self.schedule.why, **{f: "given on resume" for f in planned})
            self.schedule = dataclasses.replace(self.schedule, **planned, why=why)
        return "resuming with " + ", ".join(f"{_name(g)} {g.value} (was {was[g.field]})" for g in changed)


def _name(g: Given) -> str:
    """The flag, or for a setting a preset gives, the preset and the setting ("--preset demo's epochs")."""
    return g.flag if " " not in g.flag else f"{g.flag}'s {g.field.replace('_', '-')}"


def _same(stored, value, name: str) -> bool:
    if name == "catalog":  # the same file, however the path was written
        return Path(str(stored)).expanduser().resolve() == Path(str(value)).expanduser().resolve()
    if isinstance(stored, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(stored) == list(value)
    return stored == value
