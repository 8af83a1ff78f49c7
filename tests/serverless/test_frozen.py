"""1. Frozen instances: what K frozen instances hold on the server."""

from __future__ import annotations

from typing import Any

import pytest

from zonal_lab.bench.serverless import frozen_instances

K = 12
BURST = 5


def test_frozen_instances_direct(roomy_lab: Any, figures: Any) -> None:
    """Right after the freeze a zonal instance holds at most min_idle connections,
    and none once the server-side reaper fired; QueuePool's stay."""
    f = figures(frozen_instances(roomy_lab, k=K, burst=BURST, max_idle=2.0, min_idle=1))
    assert f["request_errors"] == 0, f["error_samples"]
    z, q = f["zonal"], f["queuepool"]
    # (a backend ends a moment after its Terminate message: settled within 1 s)
    assert f["zonal"]["settled_in_s"] is not None, z["after_freeze"]
    assert max(z["after_freeze"]) <= 1, z
    assert z["after_reaper"] == [0] * K, z
    assert z["zero_after_freeze_s"] is not None
    assert q["after_freeze"] == [BURST] * K, q
    assert q["after_reaper"] == [BURST] * K, q  # nothing reaps QueuePool's


def show_clients_columns(lab: Any) -> list[str]:
    """The columns of the zone's PgBouncer's ``SHOW CLIENTS``."""
    import psycopg

    with psycopg.connect(lab["a"].pgbouncer_admin_url(), autocommit=True,
                         connect_timeout=5) as conn:
        cur = conn.execute("SHOW CLIENTS")
        return [c.name for c in cur.description or ()]


@pytest.mark.pgbouncer
def test_frozen_instances_pgbouncer(roomy_bouncer_lab: Any, figures: Any) -> None:
    """Through PgBouncer the server side is bounded by PgBouncer's pool, however
    many clients the frozen instances keep; zonal's keep at most min_idle each."""
    lab = roomy_bouncer_lab
    if "application_name" not in show_clients_columns(lab):  # a version condition
        bouncer = lab["a"].bouncer
        pytest.skip(f"PgBouncer {'.'.join(map(str, bouncer.version))} ({bouncer.program}): "
                    "its SHOW CLIENTS has no application_name column (1.18 and later have "
                    "one), which tells the frozen instances' clients apart")
    f = figures(frozen_instances(lab, k=K, burst=BURST, max_idle=2.0, min_idle=1,
                                 via_pgbouncer=True))
    assert f["request_errors"] == 0, f["error_samples"]
    assert 0 < f["server_total_after_freeze"] <= f["pgbouncer_default_pool_size"]
    z, q = f["zonal"], f["queuepool"]
    assert max(z["pgbouncer_clients"]) <= 1, z
    assert q["pgbouncer_clients"] == [BURST] * K, q
