"""Failover and PgBouncer scenarios through Django views under real servers on
loopback: uvicorn (ASGI) and gunicorn (WSGI), and in-process failover."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from djtest_lab import HERE, ZONES, database_entry

from zonal_django.backends.postgresql.base import DatabaseWrapper
from zonal_lab.pytest_plugin import lab_missing

pytestmark = [pytest.mark.integration, pytest.mark.pgbouncer]

SRC = str(Path(HERE).parent.parent / "src")


def _env(lab: Any, **zonal: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "djtest_settings"
    env["PYTHONPATH"] = os.pathsep.join([HERE, SRC, env.get("PYTHONPATH", "")])
    env["DJTEST_DATABASE"] = json.dumps(database_entry(lab, **zonal))
    return env


@pytest.fixture(scope="module")
def tables(djlab: Any) -> None:
    """djtestapp's table in the lab database of every zone (migrate, direct)."""
    for zone in ZONES:
        subprocess.run([sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
                       env=_env(djlab, local_zone=zone), check=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, timeout: float = 10) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _server_cmd(kind: str, port: int) -> list[str]:
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "djtestapp.asgi:application", "--host",
                "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return [sys.executable, "-m", "gunicorn", "djtestapp.wsgi:application", "-b",
            f"127.0.0.1:{port}", "--workers", "2", "--threads", "4", "--log-level", "warning"]


@pytest.fixture(params=["uvicorn", "gunicorn"])
def server(request: Any, djlab: Any, tables: None) -> Iterator[int]:
    kind = request.param
    if shutil.which(kind) is None and not _importable(kind):
        lab_missing(f"{kind} is not installed (it is in the [dev] extra)")
    port = _free_port()
    proc = subprocess.Popen(_server_cmd(kind, port), env=_env(djlab), cwd=HERE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(port, "/ping", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"{kind} did not answer on port {port}")
            time.sleep(0.1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server we started, and its workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_committed_work_sync_async_and_session_rule(server: int, djlab: Any) -> None:
    statuses = [_get(server, "/items")[0] for _ in range(60)]  # bounded
    assert statuses.count(200) == 60  # 0 prepared-statement errors through PgBouncer
    status, body = _get(server, "/aping")
    assert status == 200 and body["port"] == djlab["a"].postgres.port
    status, body = _get(server, "/set-timeout")
    assert status == 400 and "SET LOCAL" in body["refused"]


def test_failover_when_the_local_zone_dies(server: int, zonal_lab: Any) -> None:
    lab = zonal_lab(zones=ZONES, pgbouncer=True)  # faults reset after the test
    assert _get(server, "/ping")[1]["port"] == lab["a"].postgres.port
    lab["a"].kill()
    results = [_get(server, "/ping") for _ in range(10)]
    assert [s for s, _ in results] == [200] * 10
    assert {b["port"] for _, b in results} == {lab["b"].postgres.port}


def test_failover_in_process(zonal_lab: Any, db_access: None) -> None:
    lab = zonal_lab(zones=ZONES, pgbouncer=True)
    w = DatabaseWrapper(database_entry(lab) | {
        "ATOMIC_REQUESTS": False, "AUTOCOMMIT": True, "CONN_MAX_AGE": 0, "TIME_ZONE": None,
        "HOST": "", "PORT": "", "TEST": {}}, "zt_failover")
    try:
        with w.cursor() as cursor:
            cursor.execute("SELECT inet_server_port()")
            assert cursor.fetchone()[0] == lab["a"].postgres.port
        w.close()
        lab["a"].kill()
        time.sleep(0.6)  # past ping_bypass: the pool pings (CONN_HEALTH_CHECKS) and fails over
        with w.cursor() as cursor:
            cursor.execute("SELECT inet_server_port()")
            assert cursor.fetchone()[0] == lab["b"].postgres.port
        w.close()
        stats = w.zonal_pool.stats()
        assert stats.zones["b"].connects >= 1 and stats.in_use == 0
    finally:
        w.close()
