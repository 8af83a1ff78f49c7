"""The serverless reapers join a user's own startup ``options``; they never replace them.

Before, ``serverless=True`` on a direct connection replaced ``options`` (say
``-c search_path=app``) with the reapers': the session silently ran with another
search_path.
"""

from __future__ import annotations

from typing import Any

from zonal_core.config import build_config
from zonal_core.psycopg_driver import PsycopgDriver, server_params


def config(**options: Any) -> Any:
    options.setdefault("zones", {"a": "127.0.0.1:5432"})
    return build_config(options)


def test_reapers_come_first_then_the_users_options() -> None:
    cfg = config(serverless=True, max_idle=30)
    ep = cfg.topology.endpoints[0]
    got = server_params(cfg, ep, {"options": "-c search_path=app"})
    assert got["options"] == ("-c idle_session_timeout=60000 "
                              "-c idle_in_transaction_session_timeout=60000 "
                              "-c search_path=app")


def test_an_explicit_idle_session_timeout_comes_last_and_wins() -> None:
    cfg = config(serverless=True)
    ep = cfg.topology.endpoints[0]
    got = server_params(cfg, ep, {"options": "-c idle_session_timeout=0"})
    assert got["options"].endswith("-c idle_session_timeout=0")


def test_the_users_keepalives_are_kept() -> None:
    cfg = config(serverless=True)
    ep = cfg.topology.endpoints[0]
    got = server_params(cfg, ep, {"keepalives_idle": 5})
    assert "keepalives_idle" not in got  # the caller's value stays
    assert got["keepalives"] == 1 and got["keepalives_count"] == 3


def test_without_user_params_as_before() -> None:
    cfg = config(serverless=True, max_idle=30)
    got = server_params(cfg, cfg.topology.endpoints[0])
    assert got["options"] == ("-c idle_session_timeout=60000 "
                              "-c idle_in_transaction_session_timeout=60000")
    assert got["keepalives_idle"] == 30


def test_not_serverless_options_untouched() -> None:
    cfg = config()
    got = server_params(cfg, cfg.topology.endpoints[0], {"options": "-c search_path=app"})
    assert "options" not in got


def test_psycopg_driver_keeps_the_users_options() -> None:
    cfg = config(serverless=True)
    driver = PsycopgDriver({"dbname": "d", "options": "-c search_path=app"}, cfg)
    params = driver.params_for(cfg.topology.endpoints[0])
    assert params["options"].startswith("-c idle_session_timeout=")
    assert params["options"].endswith("-c search_path=app")


def test_on_a_real_server(zonal_lab: Any) -> None:
    """The session really has both: the reaper and the user's search_path."""
    from zonal_core.psycopg_driver import connect

    lab = zonal_lab(zones=["a"])
    cfg = config(zones={"a": lab["a"].direct}, serverless=True, max_idle=30)
    driver = PsycopgDriver({"dbname": lab.database, "user": lab.user,
                            "password": lab.password,
                            "options": "-c search_path=app"}, cfg)
    conn = connect(driver.params_for(cfg.topology.endpoints[0]), 5)
    try:
        assert conn.execute("SHOW search_path").fetchone() == ("app",)
        assert conn.execute("SHOW idle_session_timeout").fetchone() == ("1min",)
    finally:
        conn.close()
