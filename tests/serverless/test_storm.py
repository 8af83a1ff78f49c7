"""4. Deploy storm: 60 new instances at once against max_connections=30, no PgBouncer."""

from __future__ import annotations

from typing import Any

from zonal_lab.bench.serverless import deploy_storm

N = 60


def test_deploy_storm_zonal_no_request_fails(small_lab: Any, figures: Any) -> None:
    """'too many clients' (53300) is retried with full jitter inside timeout.

    (The serverless default is timeout=5; the storm drained in 1.7-3.9 s on a busy
    2-core box, so the test allows 8 s rather than be flaky under load.)"""
    f = figures(deploy_storm(small_lab, n=N, pool="zonal", hold=0.3, timeout=8.0))
    assert f["server_max_connections"] == "30"
    assert f["failed"] == 0, f["error_samples"]
    assert f["ok"] == N
    assert f["retries_total"] > 0  # the storm did hit the limit
    assert f["drain_s"] < 8.0
    assert f["connections_held_after"] == 0  # trimmed at request end


def test_deploy_storm_queuepool_comparison(small_lab: Any, figures: Any) -> None:
    f = figures(deploy_storm(small_lab, n=N, pool="queuepool", hold=0.3, timeout=5.0))
    assert f["failed"] > 0
    assert "too many clients" in " ".join(f["error_samples"])


def test_deploy_storm_on_a_busy_machine(small_lab: Any, figures: Any) -> None:
    """The same storm with both cores kept busy by other processes: connects slow
    down, the server stays full, and still no request fails and the only zone is
    never ejected (ejection never removes the last capacity)."""
    with small_lab.cpu_load(seconds=120) as load:
        f = deploy_storm(small_lab, n=N, pool="zonal", hold=0.3, timeout=8.0)
    f["cores_busy_by_load"] = round(load.load_seen().cores_busy, 2)
    figures(f)
    assert f["failed"] == 0, f["error_samples"]
    assert f["ok"] == N
    assert f["retries_total"] > 0
