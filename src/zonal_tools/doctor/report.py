"""What doctor concludes: :class:`Finding` s, :class:`Recommendation` s and the
:class:`Report` that holds them, with its exit code. Data only; the checks that
produce them are in :mod:`zonal_tools.doctor.checks`, the text and JSON forms in
:mod:`zonal_tools.doctor.render`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from zonal_tools.doctor.facts import Facts

__all__ = ["Finding", "Level", "Recommendation", "Report", "connect_failure", "exit_code"]

Level = Literal["ok", "info", "warning", "problem"]
_RANK: Mapping[str, int] = {"ok": 0, "info": 0, "warning": 1, "problem": 2}


@dataclass(frozen=True)
class Finding:
    """One check's outcome. ``level``: ok, info (a fact), warning, problem."""

    id: str
    level: Level
    message: str
    advice: str = ""


@dataclass(frozen=True)
class Recommendation:
    """One zonal option doctor would set, and why."""

    option: str
    value: object
    why: str


@dataclass(frozen=True)
class Report:
    """Findings and recommended settings; :func:`exit_code` of it is doctor's."""

    target: str
    findings: tuple[Finding, ...]
    recommendations: tuple[Recommendation, ...] = ()
    facts: Facts | None = None

    def level(self, finding_id: str) -> Level | None:
        """The level of finding ``finding_id``, None if not reported."""
        for f in self.findings:
            if f.id == finding_id:
                return f.level
        return None

    def count(self, level: Level) -> int:
        """How many findings have ``level``."""
        return sum(f.level == level for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        out: dict[str, Any] = {
            "target": self.target,
            "exit_code": exit_code(self),
            "summary": {"problems": self.count("problem"), "warnings": self.count("warning")},
            "findings": [asdict(f) for f in self.findings],
            "recommendations": [
                {"option": r.option, "value": r.value, "why": r.why} for r in self.recommendations
            ],
        }
        if self.facts is not None:
            server = self.facts.server
            out["server"] = {**asdict(server), "settings": dict(server.settings)}
            bouncer = self.facts.pgbouncer
            out["pgbouncer"] = None
            if bouncer is not None:
                out["pgbouncer"] = {
                    **asdict(bouncer),
                    "evidence": list(bouncer.evidence),
                    "config": None if bouncer.config is None else dict(bouncer.config),
                    "database": None if bouncer.database is None else dict(bouncer.database),
                    "pool": None if bouncer.pool is None else dict(bouncer.pool),
                }
        return out


def exit_code(report: Report) -> int:
    """0 when nothing needs fixing, 1 for warnings only, 2 for problems."""
    return max((_RANK[f.level] for f in report.findings), default=0)


def connect_failure(target: str, message: str) -> Report:
    """The report of a check that could not connect or read (``message`` is safe)."""
    return Report(
        target,
        (
            Finding(
                "connect",
                "problem",
                f"cannot connect or read: {message}",
                "check host, port, database, user and password (PGPASSWORD or "
                "~/.pgpass keep it off the command line)",
            ),
        ),
    )
