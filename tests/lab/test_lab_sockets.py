"""Each lab server listens on a Unix socket too: in a short folder of the lab's own,
usable by any local user (as the loopback port is), outside the fault proxy; kill and
pause still reach it, since they act on the server."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from zonal_core.topology import Topology
from zonal_lab import Lab
from zonal_lab.errors import LabError

pytestmark = pytest.mark.integration


def over_socket(url: str, **kwargs: Any) -> tuple[int, bool]:
    kwargs.setdefault("connect_timeout", 5)
    with psycopg.connect(url, autocommit=True, **kwargs) as conn:
        row = conn.execute(
            "SELECT current_setting('port')::int, inet_server_addr() IS NULL").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def test_every_zone_has_a_socket_directory(lab: Lab) -> None:
    assert lab.base_dir is not None
    dirs = {z.name: z.socket_dir for z in lab}
    assert len(set(dirs.values())) == 2
    for zone in lab:
        folder = Path(zone.socket_dir)
        sock = folder / f".s.PGSQL.{zone.postgres.port}"
        assert folder.parent == lab.base_dir
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o777  # unix_socket_permissions
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        assert stat.S_IMODE(lab.base_dir.stat().st_mode) & 0o001  # everyone may pass
        assert len(os.fsencode(sock)) <= 107
        assert zone.socket == f"{zone.socket_dir}:{zone.postgres.port}"
        assert over_socket(zone.url(socket=True)) == (zone.postgres.port, True)


def test_zones_socket_true_is_ready_for_zones(lab: Lab) -> None:
    zones = lab.zones(socket=True)
    assert zones == {name: lab[name].socket for name in lab.names}
    topo = Topology.parse(zones)
    assert [(e.host, e.port) for e in topo.endpoints] == [
        (lab[n].socket_dir, lab[n].postgres.port) for n in lab.names]
    with pytest.raises(LabError, match="PgBouncer"):
        lab.zones(socket=True, pgbouncer=True)
    with pytest.raises(LabError, match="no proxy"):
        lab["a"].url(socket=True, proxy=True)


def test_proxy_faults_do_not_reach_the_socket_kill_and_pause_do(lab: Lab) -> None:
    a = lab["a"]
    url = a.url(socket=True)
    a.proxy.blackhole()
    try:
        assert over_socket(url) == (a.postgres.port, True)  # the proxy is not in the way
    finally:
        a.proxy.heal()
    a.pause()
    try:
        began = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            over_socket(url, connect_timeout=2)
        assert time.monotonic() - began < 5
    finally:
        a.resume()
    a.kill()
    with pytest.raises(psycopg.OperationalError):
        over_socket(url)
    a.start()
    assert over_socket(url) == (a.postgres.port, True)


def test_a_long_lab_folder_puts_the_sockets_in_a_short_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # in /tmp, every level open to the servers' user (pytest's tmp_path is 0700)
    top = Path(tempfile.mkdtemp(prefix="zonal-long-", dir="/tmp"))
    try:
        long_dir = top / ("x" * 60) / ("y" * 40)
        long_dir.mkdir(parents=True)
        for folder in (top, top / ("x" * 60), long_dir):
            folder.chmod(0o755)
        monkeypatch.setenv("ZONAL_LAB_DIR", str(long_dir))
        with Lab(zones=["a"]) as lab:
            assert lab.base_dir is not None and lab.base_dir.parent == long_dir
            a = lab["a"]
            sockets = Path(a.socket_dir)
            assert not sockets.is_relative_to(lab.base_dir)
            assert len(os.fsencode(sockets / f".s.PGSQL.{a.postgres.port}")) <= 107
            assert over_socket(a.url(socket=True)) == (a.postgres.port, True)
        assert not sockets.exists() and not sockets.parent.exists()  # removed with the lab
    finally:
        shutil.rmtree(top, ignore_errors=True)
