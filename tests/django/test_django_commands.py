"""``manage.py zonal_status`` and ``manage.py zonal_doctor`` against real zones:
output through the command's own streams, the alias's own settings, and exit codes
a deploy can be gated on (0 fine, 1 something down or to fix, 2 cannot run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from djtest_lab import HERE, database_entry

pytestmark = [pytest.mark.integration, pytest.mark.pgbouncer,
              pytest.mark.usefixtures("db_access")]

SRC = str(Path(HERE).parent.parent / "src")
WRONG = "Wr0ng-Passw0rd-42"


@contextmanager
def alias(name: str, djlab: Any, **changes: Any) -> Iterator[dict[str, Any]]:
    """A zonal alias of the lab's database, with ``changes`` to its settings
    (``zonal=`` for its zonal options)."""
    zonal = changes.pop("zonal", {})
    entry = {**connection.settings_dict, "NAME": djlab.database, **changes}
    entry["OPTIONS"] = {**entry["OPTIONS"],
                        "zonal": {**entry["OPTIONS"]["zonal"], **zonal}}
    connections.settings[name] = entry
    try:
        yield entry
    finally:
        if name in connections:  # (the handler keeps wrappers in a local)
            connections[name].close()
            del connections[name]
        del connections.settings[name]


def run(command: str, **options: Any) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the command as ``manage.py`` would give them:
    a ``CommandError`` is its message on stderr and its ``returncode``."""
    out, err = StringIO(), StringIO()
    try:
        call_command(command, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + f"CommandError: {exc}\n"
    return 0, out.getvalue(), err.getvalue()


# -- zonal_status -------------------------------------------------------------------


def test_status_every_zone_up_exits_0(djlab: Any) -> None:
    with alias("zt_up", djlab):
        code, out, err = run("zonal_status", database=["zt_up"])
        assert code == 0, out + err
        assert "zone" in out and "probe a/" in out and "probe b/" in out
        assert "down" not in out and err == ""
        assert djlab.password not in out + err
        code, out, _ = run("zonal_status", database=["zt_up"], json=True)
        doc = json.loads(out)["zt_up"]
        assert code == 0 and doc["ok"] is True and doc["failed"] == []


def test_status_wrong_password_exits_1(djlab: Any) -> None:
    """Every probe down and the pool unable to connect: 1, not 0."""
    with alias("zt_wrong", djlab, PASSWORD=WRONG):
        code, out, err = run("zonal_status", database=["zt_wrong"])
        assert code == 1, out + err
        assert "connect through the pool FAILED" in out
        probes = [line for line in out.splitlines() if line.strip().startswith("probe ")]
        assert len(probes) == 4 and all(": down: " in p for p in probes), probes
        assert "the pool cannot connect" in err
        assert WRONG not in out + err and djlab.password not in out + err


def test_status_a_zone_down_exits_1(djlab: Any, zonal_lab: Any) -> None:
    lab = zonal_lab(zones=("a", "b"), pgbouncer=True)  # the same lab; faults reset after
    assert lab is djlab
    with alias("zt_down", djlab):
        lab["b"].proxy.refuse()
        code, out, err = run("zonal_status", database=["zt_down"])
        assert code == 1, out + err
        assert "connect through the pool FAILED" not in out  # zone a serves
        b_probes = [line for line in out.splitlines() if "probe b/" in line]
        assert len(b_probes) == 2 and all(": down: " in p for p in b_probes)
        assert err.count("CommandError") == 1
        assert "probe b/" in err and "probe a/" not in err


def test_status_cannot_run_exits_2(djlab: Any) -> None:
    code, out, err = run("zonal_status", database=["zt_no_such_alias"])
    assert code == 2 and "zt_no_such_alias" in err and out == ""
    with alias("zt_bad", djlab, zonal={"local_zone": "zz"}):
        code, out, err = run("zonal_status", database=["zt_bad"])
        assert code == 2 and "local_zone" in err and out == ""


# -- zonal_doctor -------------------------------------------------------------------


def test_doctor_uses_the_alias_pool_size(djlab: Any) -> None:
    """``pool_size: 50`` used to be reported as 'at pool_size 5' with advice
    ``pool_size=5``, and the exit status was 0 whatever doctor found."""
    with alias("zt_fifty", djlab, zonal={"pool_size": 50}):
        code, out, err = run("zonal_doctor", database=["zt_fifty"])
        assert "pool_size=50, max_total=50" in out.splitlines()[0]
        text = " ".join(out.split())
        assert "at pool_size 50," in text  # the direct endpoints' capacity
        assert "at pool_size 5," not in text and "pool_size=5 " not in text
        assert "pool_size=50 your pool_size" in text
        assert ": exit " not in out  # zonal doctor's own exit codes are not this command's
        assert djlab.password not in out + err
        code_json, out_json, _ = run("zonal_doctor", database=["zt_fifty"], json=True)
        doc = json.loads(out_json)["zt_fifty"]
        assert doc["pool_size"] == 50 and len(doc["endpoints"]) == 4
        found = [f for e in doc["endpoints"] for f in e["report"]["findings"]
                 if f["level"] in ("warning", "problem")]
        assert code == code_json == (1 if found else 0), found
        if found:
            assert err.count("CommandError") == 1 and "warning(s)" in err


def test_doctor_a_zone_down_exits_1_and_says_it_once(djlab: Any, zonal_lab: Any) -> None:
    lab = zonal_lab(zones=("a", "b"), pgbouncer=True)
    with alias("zt_doc_down", djlab):
        lab["b"].proxy.refuse()
        code, out, err = run("zonal_doctor", database=["zt_doc_down"])
        assert code == 1, out + err
        for endpoint in (lab["b"].endpoint(pgbouncer=True), lab["b"].endpoint(pgbouncer=False)):
            assert out.count(f"{endpoint}") == 1, out  # one line: the failure, once
        assert out.count("cannot connect") == 2
        assert "zonal doctor: postgresql://" in out  # zone a was still checked
        assert "2 unreachable" in err and err.count("CommandError") == 1


def test_doctor_wrong_password_exits_1_without_showing_it(djlab: Any) -> None:
    with alias("zt_doc_wrong", djlab, PASSWORD=WRONG):
        code, out, err = run("zonal_doctor", database=["zt_doc_wrong"])
        assert code == 1, out + err
        assert out.count("cannot connect") == 4 and "authentication failed" in out
        assert "4 unreachable" in err
        assert WRONG not in out + err and djlab.password not in out + err


def test_doctor_cannot_run_exits_2(djlab: Any) -> None:
    with alias("zt_doc_bad", djlab, zonal={"pool_size": 0}):
        code, out, err = run("zonal_doctor", database=["zt_doc_bad"])
        assert code == 2 and "pool_size" in err and out == ""


# -- as processes: the exit status manage.py gives the shell --------------------------


def manage(djlab: Any, *args: str, **zonal: Any) -> subprocess.CompletedProcess[str]:
    changes = zonal.pop("_entry", {})
    entry = {**database_entry(djlab, **zonal), **changes}
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "djtest_settings"
    env["PYTHONPATH"] = os.pathsep.join([HERE, SRC, env.get("PYTHONPATH", "")])
    env["DJTEST_DATABASE"] = json.dumps(entry)
    return subprocess.run([sys.executable, "-m", "django", *args], env=env, cwd=HERE,
                          capture_output=True, text=True, timeout=120, check=False)


def test_exit_status_of_the_processes(djlab: Any) -> None:
    proc = manage(djlab, "zonal_status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = manage(djlab, "zonal_status", _entry={"PASSWORD": WRONG})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("CommandError") == 1
    assert WRONG not in proc.stdout + proc.stderr
    proc = manage(djlab, "zonal_doctor", _entry={"PASSWORD": WRONG})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for command in ("zonal_status", "zonal_doctor"):
        # settings zonal refuses: 2 (not a system check failure's 1)
        proc = manage(djlab, command, local_zone="zz")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "local_zone" in proc.stderr and proc.stdout == ""
