"""``zonal doctor``: a PostgreSQL server (or the PgBouncer in front of it) against
what zonal needs, with advice.

::

    $ zonal doctor postgresql://app@db:5432/appdb --instances 40
    $ zonal doctor postgresql://app@db:6432/appdb --pgbouncer-admin postgresql://app@db:6432/pgbouncer

Split by concern, so the analysis is testable without a database:

- :mod:`~zonal_tools.doctor.facts`: what was observed (:class:`Facts`) and what the
  caller says about the deployment (:class:`Deployment`);
- :mod:`~zonal_tools.doctor.collect`: the I/O that gathers the facts
  (:func:`collect`, bounded connects);
- :mod:`~zonal_tools.doctor.checks`: :func:`analyze`, pure, facts in, a
  :class:`Report` of :class:`Finding` s and :class:`Recommendation` s out;
- :mod:`~zonal_tools.doctor.render`: the report as text or JSON, to a stream;
- :mod:`~zonal_tools.doctor.cli`: the ``zonal doctor`` subcommand.

:func:`diagnose` is the whole check in one call (what ``manage.py zonal_doctor``
runs for every endpoint). No output ever contains a password: URLs are masked,
driver errors described by :func:`zonal_core.pgerrors.safe_description`.
"""

from __future__ import annotations

from zonal_core.config import DEFAULTS
from zonal_core.secrets import mask, redact
from zonal_tools.doctor.checks import analyze
from zonal_tools.doctor.collect import (
    DoctorError,
    DoctorTarget,
    collect,
    describe,
    secrets_of,
    with_deadline,
)
from zonal_tools.doctor.facts import Deployment, Facts, PgBouncerFacts, ServerFacts
from zonal_tools.doctor.render import render, render_json, summary, write_report
from zonal_tools.doctor.report import (
    Finding,
    Recommendation,
    Report,
    connect_failure,
    exit_code,
)

__all__ = [
    "CHECK_TIMEOUT",
    "Deployment",
    "DoctorError",
    "DoctorTarget",
    "Facts",
    "Finding",
    "PgBouncerFacts",
    "Recommendation",
    "Report",
    "ServerFacts",
    "analyze",
    "collect",
    "connect_failure",
    "describe",
    "diagnose",
    "exit_code",
    "render",
    "render_json",
    "secrets_of",
    "summary",
    "with_deadline",
    "write_report",
]

CHECK_TIMEOUT = 30.0
"""Seconds the whole check of one server may take (``zonal doctor --timeout``)."""


def diagnose(
    target: DoctorTarget,
    *,
    admin_url: str | None = None,
    deployment: Deployment | None = None,
    connect_timeout: float = DEFAULTS["connect_timeout"],
    timeout: float = CHECK_TIMEOUT,
) -> Report:
    """Collect the facts of ``target`` within ``timeout`` seconds and analyze them.

    Raises :class:`DoctorError` when the server cannot be reached or read; its
    message is masked (no password of ``target``, ``admin_url`` or ``PGPASSWORD``).
    """
    hidden = secrets_of([target, admin_url])
    try:
        facts = with_deadline(lambda: collect(target, admin_url, connect_timeout), timeout)
    except DoctorError as exc:
        raise DoctorError(mask(redact(str(exc), hidden))) from None
    return analyze(facts, deployment)
