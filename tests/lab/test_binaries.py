"""A lab environment variable that points at nothing is an error naming it, never a
silent fall-back to another PostgreSQL or PgBouncer."""

from __future__ import annotations

import pytest

from zonal_lab.binaries import find_pgbouncer, find_postgres
from zonal_lab.errors import LabError


def test_pg_bin_pointing_at_nothing_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZONAL_LAB_PG_BIN", "/nonexistent")
    with pytest.raises(LabError, match="ZONAL_LAB_PG_BIN='/nonexistent'"):
        find_postgres()


def test_pgbouncer_pointing_at_nothing_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZONAL_LAB_PGBOUNCER", "/nonexistent")
    with pytest.raises(LabError, match="ZONAL_LAB_PGBOUNCER='/nonexistent'"):
        find_pgbouncer()


def test_pg_bin_names_the_one_used(monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_postgres()
    monkeypatch.setenv("ZONAL_LAB_PG_BIN", str(found.bindir))
    chosen = find_postgres()
    assert (chosen.bindir, chosen.source) == (found.bindir, "env")
