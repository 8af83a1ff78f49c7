"""Serverless lifecycle scenarios (issue 6): real processes against real zones.

The scenario code lives in ``zonal_lab.bench.serverless`` so ``zonal bench`` prints
the same figures these tests assert on. Each test records its figures with the
``figures`` fixture; they are printed at the end of the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import keep_figure

# One lab for frozen/thaw/shutdown (room for 24 instances' bursts), the same with a
# PgBouncer for the one test that goes through it, one small server for the deploy
# storm.
ROOMY = {"zones": ["a"], "server_settings": {"max_connections": 200}}
ROOMY_BOUNCER = {**ROOMY, "pgbouncer": True}
SMALL = {"zones": ["a"], "server_settings": {"max_connections": 30}}


@pytest.fixture
def roomy_lab(zonal_lab: Any) -> Any:
    return zonal_lab(**ROOMY)


@pytest.fixture
def roomy_bouncer_lab(zonal_lab: Any) -> Any:
    """``roomy_lab`` with a PgBouncer (skipped, or failed under ZONAL_LAB_REQUIRE,
    without it)."""
    return zonal_lab(**ROOMY_BOUNCER)


@pytest.fixture
def small_lab(zonal_lab: Any) -> Any:
    return zonal_lab(**SMALL)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``figures(d)``: keep ``d`` for the end-of-run summary (and return it)."""

    def keep(d: dict[str, Any]) -> dict[str, Any]:
        keep_figure("serverless figures", request.node.name,
                    json.dumps(d, separators=(",", ":")))
        return d

    return keep
