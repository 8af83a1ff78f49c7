"""2. Thaw: a frozen instance's connections died meanwhile; no error may reach the app."""

from __future__ import annotations

from typing import Any

import pytest

from zonal_lab.bench.serverless import thaw


@pytest.mark.parametrize("fault", ["terminate", "restart"])
def test_thaw_after_suspend_hides_dead_connections(roomy_lab: Any, figures: Any,
                                                   fault: str) -> None:
    """Frozen longer than max_idle: the suspend is detected on the first checkout
    and the stale connections are discarded before use, without a ping."""
    f = figures(thaw(roomy_lab, fault=fault, max_idle=2.0, freeze_for=3.0))
    assert f["idle_before_freeze"] == 2
    assert f["errors"] == 0, f["error_samples"]
    assert f["suspends"] == 1
    assert f["closes"].get("suspend") == 2, f["closes"]
    assert f["clock"] == "boottime" or f["clock"] == "monotonic"


def test_short_thaw_with_pre_ping_hides_dead_connections(roomy_lab: Any, figures: Any) -> None:
    """Frozen for less than max_idle (no suspend): pre-ping finds the dead ones."""
    f = figures(thaw(roomy_lab, fault="terminate", max_idle=2.0, freeze_for=1.0,
                     pre_ping=True))
    assert f["errors"] == 0, f["error_samples"]
    assert f["suspends"] == 0
    assert f["ping_failures"] == 2 and f["closes"].get("ping_failed") == 2


def test_short_thaw_without_pre_ping_shows_errors(roomy_lab: Any, figures: Any) -> None:
    """The evidence for pre_ping in the serverless profile: without it, a thaw
    shorter than max_idle hands out connections whose backends died."""
    f = figures(thaw(roomy_lab, fault="terminate", max_idle=2.0, freeze_for=1.0,
                     pre_ping=False))
    assert f["suspends"] == 0
    assert 1 <= f["errors"] <= 2, f  # one per stale idle connection, at most
    assert "terminating connection" in " ".join(f["error_samples"])


def test_thaw_queuepool_comparison(roomy_lab: Any, figures: Any) -> None:
    """QueuePool without pre-ping: the first request after the thaw fails."""
    f = figures(thaw(roomy_lab, fault="terminate", pool="queuepool", freeze_for=3.0))
    assert f["errors"] >= 1
