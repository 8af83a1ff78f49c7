"""Nothing in the lab assumes root: run as root, prove the other path by starting a
lab as an unprivileged user (``runuser -u nobody``) and using it with ``psql``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from zonal_lab.binaries import find_pgbouncer
from zonal_lab.pytest_plugin import lab_missing
from zonal_lab.runas import RunAs

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess
    from zonal_lab import Lab

    def psql(lab, url, sql):
        out = subprocess.run(
            [lab.binaries.program("psql"), "-X", "-At", "-c", sql, url],
            capture_output=True, text=True, timeout=20,
        )
        return out.stdout.strip() or out.stderr.strip()

    report = {"uid": os.geteuid()}
    with Lab(zones=["a", "b"], pgbouncer=PGBOUNCER,
             server_settings={"max_connections": 20}) as lab:
        report["source"] = lab.binaries.source
        report["base"] = str(lab.base_dir)
        a = lab["a"]
        report["direct"] = psql(lab, a.url(), "SHOW max_connections")
        report["proxy"] = psql(lab, a.url(proxy=True), "SELECT current_user")
        if PGBOUNCER:
            report["pgbouncer"] = psql(lab, a.url(pgbouncer=True, proxy=True), "SELECT 7")
        a.kill()
        report["killed"] = a.state
        a.start()
        report["restarted"] = psql(lab, a.url(proxy=True), "SELECT 8")
        a.pause(); a.resume()
        report["resumed"] = psql(lab, a.url(), "SELECT 9")
    report["removed"] = not os.path.exists(report["base"])
    print(json.dumps(report))
    """
)


def _interpreter(runas: RunAs) -> str | None:
    """A Python the unprivileged user can run: ours, else the system's."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(candidate) and runas.can_reach(Path(candidate)):
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="the test suite runs unprivileged already")
@pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser to drop root")
def test_a_lab_runs_as_an_unprivileged_user() -> None:
    runas = RunAs.detect()
    python = _interpreter(runas)
    if python is None:
        lab_missing(f"no Python that user {runas.name!r} can run")
    pgbouncer = find_pgbouncer() is not None
    home = tempfile.mkdtemp(prefix="zonal-nonroot-")
    try:
        os.chown(home, runas.uid, runas.gid)
        # The checkout may sit under a directory the user cannot enter (a 0700
        # temp dir, root's home): give it a readable copy of the sources.
        src = Path(home) / "src"
        for pkg in ("zonal_core", "zonal_lab"):
            shutil.copytree(SRC / pkg, src / pkg,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for path in [src, *src.rglob("*")]:
            os.chown(path, runas.uid, runas.gid)
        env = {
            "HOME": home,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(src),
            "TMPDIR": home,
        }
        proc = subprocess.run(
            [
                "runuser",
                "-u",
                runas.name,
                "--",
                python,
                "-c",
                SCRIPT.replace("PGBOUNCER", str(pgbouncer)),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
            timeout=90,
            check=False,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0 and "no PostgreSQL server programs found" in proc.stderr:
        lab_missing(f"no PostgreSQL server programs that user {runas.name!r} can run: "
                    + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["uid"] == runas.uid != 0
    assert report["direct"] == "20"
    assert report["proxy"] == "zonal"
    if pgbouncer:
        assert report["pgbouncer"] == "7"
    assert report["killed"] == "killed"
    assert report["restarted"] == "8"
    assert report["resumed"] == "9"
    assert report["removed"] is True
