"""A :class:`Report` as text or JSON, written to a stream the caller gives
(``sys.stdout`` for ``zonal doctor``, ``self.stdout`` for ``manage.py zonal_doctor``).
Nothing here prints on its own."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from typing import TextIO

from zonal_core.secrets import redact
from zonal_tools.doctor.report import Report, exit_code

__all__ = ["WIDTH", "render", "render_json", "summary", "write_report"]

WIDTH = 100
"""Columns of the text report."""

_MARK: Mapping[str, str] = {"ok": "ok", "info": "info", "warning": "WARN", "problem": "PROBLEM"}


def _wrap(text: str, first: str, rest: str) -> str:
    return textwrap.fill(
        text,
        width=WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def summary(report: Report) -> str:
    """``2 problem(s), 1 warning(s)``."""
    return f"{report.count('problem')} problem(s), {report.count('warning')} warning(s)"


def render(report: Report, *, verdict: bool = True) -> str:
    """The human report: findings with advice, then the settings zonal would pick,
    then the counts (and ``zonal doctor``'s exit code, unless ``verdict`` is False:
    a caller with exit codes of its own)."""
    lines = [f"zonal doctor: {report.target}", ""]
    for f in report.findings:
        lines.append(_wrap(f"{f.id}: {f.message}", f"[{_MARK[f.level]:>7}] ", " " * 10))
        if f.advice:
            lines.append(_wrap(f.advice, " " * 10 + "-> ", " " * 13))
    if report.recommendations:
        lines += ["", "zonal settings for this server:"]
        for r in report.recommendations:
            value = repr(r.value) if isinstance(r.value, str) else str(r.value)
            lines.append(f"  {r.option}={value}")
            lines.append(_wrap(r.why, " " * 6, " " * 6))
    tail = f": exit {exit_code(report)}" if verdict else ""
    lines += ["", summary(report) + tail]
    return "\n".join(lines)


def render_json(report: Report) -> str:
    """The ``--json`` document (:meth:`Report.as_dict`), indented."""
    return json.dumps(report.as_dict(), indent=2, default=str)


def write_report(
    report: Report,
    out: TextIO,
    *,
    as_json: bool = False,
    verdict: bool = True,
    hidden: Iterable[str] = (),
) -> None:
    """Write ``report`` to ``out``, every secret of ``hidden`` masked (belt and
    braces: nothing in a report should hold one)."""
    text = render_json(report) if as_json else render(report, verdict=verdict)
    out.write(redact(text, hidden) + "\n")
