"""The catalogue audit: label issues, photo/title mismatches and duplicate listings a trained run finds in its own
catalogue, the review decisions stored with the run, and the corrected catalogue they export.

    from huse_core.audit import audit, record, export_corrected
    rows = audit("runs/shop", kinds="labels,duplicates", top=50)   # plain dicts, best first
    record("runs/shop", rows[:3], "accept")                        # stored in runs/shop/audit/decisions.sqlite
    export_corrected("runs/shop")                                  # a new CSV beside the input, never the input
"""

from .core import COLUMNS, KINDS, audit, parse_kinds
from .decisions import DECISIONS, export_corrected, load_findings, read_decisions, record, save_findings
from .duplicates import resembling
from .inputs import AuditError, load_inputs

__all__ = ["COLUMNS", "DECISIONS", "KINDS", "AuditError", "audit", "export_corrected", "load_inputs", "parse_kinds",
           "load_findings", "read_decisions", "record", "resembling", "save_findings"]


class _CallableModule(__import__("types").ModuleType):
    """`huse_core.audit(run_dir, ...)` calls audit() whether or not this package was imported first."""

    def __call__(self, *args, **kwargs):
        return audit(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
