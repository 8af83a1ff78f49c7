"""The lab always cleans up: on leaving ``with``, on an exception, on SIGTERM, on
Ctrl-C (SIGINT), and through its reaper even when its owner dies of SIGKILL, it stops
every process it started and removes its files."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.conftest import eventually

from zonal_lab import Lab, LabError, procs
from zonal_lab.binaries import find_pgbouncer

pytestmark = pytest.mark.integration


def lab_pids(lab: Lab) -> list[int]:
    pids = []
    for zone in lab:
        assert zone.postgres.pid is not None
        pids += [zone.postgres.pid, *procs.children(zone.postgres.pid)]
        if zone.bouncer is not None and zone.bouncer.pid is not None:
            pids.append(zone.bouncer.pid)
    return pids


def test_with_block_cleans_up_on_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab(zones=["x"]) as lab:
        pids = lab_pids(lab)
        base = lab.base_dir
        assert base is not None and base.exists()
        assert all(procs.alive(p) for p in pids)
        raise RuntimeError("boom")
    assert procs.wait_gone(pids, timeout=5)
    assert not base.exists()
    lab.stop()  # idempotent


def test_a_paused_lab_still_stops() -> None:
    lab = Lab(zones=["x"]).start()
    pids = lab_pids(lab)
    base = lab.base_dir
    assert base is not None
    lab["x"].pause()
    lab["x"].proxy.blackhole()
    lab.stop()
    assert procs.wait_gone(pids, timeout=5)
    assert not base.exists()


CHILD = textwrap.dedent(
    """
    import json, signal, sys, time
    from zonal_lab import Lab, procs
    # a shell's background job inherits SIGINT ignored; a terminal's Ctrl-C is not
    signal.signal(signal.SIGINT, signal.default_int_handler)
    lab = Lab(zones=["x", "y"], pgbouncer={pgbouncer}).start()
    pids = []
    for zone in lab:
        pids += [zone.postgres.pid, *procs.children(zone.postgres.pid)]
        if zone.bouncer is not None:
            pids.append(zone.bouncer.pid)
    print(json.dumps({{"base": str(lab.base_dir), "pids": pids}}), flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"]
)
def test_an_interrupted_process_cleans_up(sig: signal.Signals) -> None:
    pgbouncer = find_pgbouncer() is not None
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(pgbouncer=pgbouncer)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the child lab did not start within 60 s"
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        info = json.loads(line)
        pids, base = info["pids"], Path(info["base"])
        assert base.exists() and all(procs.alive(p) for p in pids)
        os.kill(child.pid, sig)
        # the child stops two zones (servers, PgBouncers) on its way out, each stop
        # bounded (5 s, then a kill); on a loaded CI machine that has taken over 30 s
        child.wait(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # after SIGKILL only the reaper is left to clean up: give it a moment
    assert procs.wait_gone(pids, timeout=10), [p for p in pids if procs.alive(p)]
    assert eventually(base.exists, False) is False
    if sig == signal.SIGTERM:
        assert child.returncode == -signal.SIGTERM  # still dies of SIGTERM


def test_a_failed_start_says_why_and_leaves_nothing() -> None:
    lab = Lab(zones=["x", "y"], server_settings={"no_such_setting": 1})
    with pytest.raises(LabError, match="no_such_setting"):
        lab.start()
    assert lab.base_dir is None
    with pytest.raises(LabError, match="not running"):
        lab["x"]


def test_docker_backend_fails_clearly_without_docker() -> None:
    with pytest.raises(LabError, match="backend='docker'"):
        Lab(zones=["x"], backend="docker").start()
