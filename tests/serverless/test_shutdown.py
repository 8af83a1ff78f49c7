"""5. Shutdown: SIGTERM and interpreter exit close idle connections, promptly."""

from __future__ import annotations

from typing import Any

import pytest

from zonal_lab.bench.serverless import shutdown


def test_interpreter_exit_closes_idle_connections(roomy_lab: Any, figures: Any) -> None:
    f = figures(shutdown(roomy_lab, how="exit"))
    assert f["idle_before"] == 3 and f["server_before"] == 3
    assert f["returncode"] == 0 and f["exit_s"] < 5
    assert f["closed_at_exit"] == 3  # by zonal's atexit hook, not by the kernel
    assert f["idle_at_exit"] == 0
    assert f["server_gone_in_s"] is not None and f["server_gone_in_s"] < 0.5


def test_sigterm_closes_idle_connections_and_dies_of_it(roomy_lab: Any, figures: Any) -> None:
    f = figures(shutdown(roomy_lab, how="sigterm"))
    assert f["returncode"] == -15  # the previous (default) disposition still applies
    assert f["exit_s"] < 2
    assert f["server_gone_in_s"] is not None and f["server_gone_in_s"] < 0.5


def test_sigterm_closes_them_even_if_the_process_lives_on(roomy_lab: Any,
                                                        figures: Any) -> None:
    """A runtime that survives SIGTERM and is then frozen or destroyed (no FIN ever
    reaches the server): only the handler can close them. QueuePool's stay."""
    z = figures(shutdown(roomy_lab, how="sigterm-alive"))
    assert z["alive_after"] and z["handled_in_s"] < 1
    assert z["server_gone_in_s"] is not None and z["server_gone_in_s"] < 0.5
    q = figures(shutdown(roomy_lab, how="sigterm-alive", pool="queuepool"))
    assert q["alive_after"]
    assert q["server_right_after"] == 3 and q["server_gone_in_s"] is None


@pytest.mark.parametrize("how", ["sigterm", "exit"])
def test_shutdown_does_not_hang_on_a_paused_zone(roomy_lab: Any, figures: Any,
                                                  how: str) -> None:
    f = figures(shutdown(roomy_lab, how=how, paused=True))
    assert not f.get("hung")
    assert f["exit_s"] < 2
    assert f["returncode"] == (-15 if how == "sigterm" else 0)
