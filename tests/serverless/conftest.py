"""Serverless lifecycle scenarios (issue 6): real processes against real zones.

The scenario code lives in ``benchmarks/serverless.py`` so ``zonal bench`` prints the
same figures these tests assert on. Each test records its figures with the
``figures`` fixture; they are printed at the end of the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

_FIGURES: list[tuple[str, dict[str, Any]]] = []

# One lab for frozen/thaw/shutdown (room for 24 instances' bursts, and a PgBouncer),
# one small server for the deploy storm (no PgBouncer).
ROOMY = {"zones": ["a"], "pgbouncer": True, "server_settings": {"max_connections": 200}}
SMALL = {"zones": ["a"], "server_settings": {"max_connections": 30}}


@pytest.fixture
def roomy_lab(zonal_lab: Any) -> Any:
    return zonal_lab(**ROOMY)


@pytest.fixture
def small_lab(zonal_lab: Any) -> Any:
    return zonal_lab(**SMALL)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``figures(d)``: keep ``d`` for the end-of-run summary (and return it)."""

    def keep(d: dict[str, Any]) -> dict[str, Any]:
        _FIGURES.append((request.node.name, d))
        print(json.dumps(d, indent=1))
        return d

    return keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("serverless figures")
    for name, d in _FIGURES:
        terminalreporter.write_line(f"{name}: {json.dumps(d, separators=(',', ':'))}")
