"""Chaos soak (issue 9, item 1): writers through ``ZonalPool`` and through the Django
backend while zones are killed, paused, restarted, slowed, cut and refused.

Three zones, each its own PostgreSQL server behind a fault proxy. 8 SQLAlchemy
writer threads here and 8 Django writer threads in a subprocess (Django's settings
are process-wide) write rows with unique keys and read them back; a driver injects a
random fault (seeded) into a random zone every few seconds, at most two zones at a
time, and heals everything before the end. Then, on every zone's server:

- every acknowledged commit is there, in the zone that acknowledged it, once;
- what failed before COMMIT is nowhere; nothing is stored twice;
- no borrowed connection leaked (``stats().in_use == 0``), no thread hung;
- every error the application saw is a documented one: PoolTimeout, NoHealthyZone,
  QueryTimeout, or an OperationalError/DBAPIError wrapping a disconnect.

``ZONAL_SOAK_SECONDS`` (default 75) sets the length, ``ZONAL_SOAK_SEED`` the faults.
Servers run with ``synchronous_commit=on``: the lab's default (off) may lose the last
commits of a killed server, which is the lab's choice, not a failure of zonal.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, exc

from tests.reliability.soak import COUNT_SQL, DDL, INSERT_SQL, TABLE, Ledger, Unit, verify, writer
from zonal_core import NoHealthyZone, PoolTimeout, QueryTimeout
from zonal_core.pgerrors import is_disconnect
from zonal_sqlalchemy import ZonalPool

SECONDS = float(os.environ.get("ZONAL_SOAK_SECONDS", "75"))
SEED = int(os.environ.get("ZONAL_SOAK_SEED", "9"))
THREADS = 8
ROOT = Path(__file__).resolve().parents[2]
ZONES = ("a", "b", "c")
POOL = {"local_zone": "a", "pool_size": 4, "timeout": 5, "connect_timeout": 1,
        "query_timeout": 2, "ping_timeout": 0.5, "failback_after": 3}
FAULTS = ("kill", "pause", "latency", "blackhole", "reset", "refuse", "terminate")


class FaultDriver:
    """Random faults on random zones, every few seconds; each one healed later."""

    def __init__(self, lab: Any, seed: int) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.active: dict[str, tuple[str, float]] = {}  # zone -> (fault, heal at)
        self.injected: Counter[str] = Counter()
        self.log: list[str] = []
        self.t0 = time.monotonic()

    def _note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.1f}s {what}")

    def inject(self) -> None:
        free = [z for z in ZONES if z not in self.active and self.lab[z].state == "running"]
        if len(self.active) >= 2 or not free:
            return
        zone = self.rng.choice(free)
        fault = self.rng.choice(FAULTS)
        z = self.lab[zone]
        if fault == "kill":
            z.kill()
        elif fault == "pause":
            z.pause()
        elif fault == "latency":
            ms = self.rng.choice([50, 150, 400])
            z.proxy.latency(ms=ms)
            fault = f"latency {ms} ms"
        elif fault == "blackhole":
            z.proxy.blackhole()
        elif fault == "reset":
            z.proxy.reset()
        elif fault == "refuse":
            z.proxy.refuse()
            z.proxy.reset()
        else:
            z.terminate_backends()
        self.injected[fault.split()[0]] += 1
        self._note(f"{fault} {zone}")
        if fault not in ("reset", "terminate"):  # instantaneous: nothing to heal
            self.active[zone] = (fault, time.monotonic() + self.rng.uniform(1.0, 4.0))

    def heal(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        for zone, (fault, at) in list(self.active.items()):
            if everything or now >= at:
                self.lab[zone].reset_faults()  # resume / start / heal the proxy
                if fault == "kill":
                    self.injected["restart"] += 1
                del self.active[zone]
                self._note(f"healed {zone} ({fault})")

    def run(self, until: float) -> None:
        """Inject and heal until ``until``; everything is healed when it returns."""
        try:
            while time.monotonic() < until:
                self.heal()
                self.inject()
                time.sleep(min(self.rng.uniform(2.0, 4.0), max(0.0, until - time.monotonic())))
        finally:
            self.heal(everything=True)
            self.lab.reset_faults()


def classify(err: BaseException) -> str | None:
    """The documented kind of an error the application saw, or None."""
    if isinstance(err, PoolTimeout | exc.TimeoutError):
        return "PoolTimeout"
    if isinstance(err, NoHealthyZone):
        return "NoHealthyZone"
    if isinstance(err, exc.DBAPIError):
        orig = err.orig
        if isinstance(orig, QueryTimeout):
            return "QueryTimeout"
        if err.connection_invalidated or (orig is not None and is_disconnect(orig)):
            return f"{type(err).__name__} (disconnect: {type(orig).__name__})"
    return None


def rows_per_server(lab: Any) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for zone in lab:
        with zone.connect(autocommit=True) as c:
            out[zone.postgres.port] = {
                k: int(n) for k, n in c.execute(
                    f"SELECT key, count(*) FROM {TABLE} GROUP BY key").fetchall()}
    return out


def test_chaos_soak(zonal_lab: Any) -> None:
    lab = zonal_lab(zones=list(ZONES), server_settings={"synchronous_commit": True})
    for zone in lab:
        with zone.connect(autocommit=True) as c:
            c.execute(DDL)
    port_zone = {lab[z].postgres.port: z for z in ZONES}
    engine = create_engine(f"postgresql+psycopg://{lab.user}:{lab.password}@/{lab.database}",
                           poolclass=ZonalPool, zones=lab.zones(pgbouncer=False),
                           pool_pre_ping=True, **{k: v for k, v in POOL.items()
                                                  if k != "timeout"}, pool_timeout=5)

    def write(key: str, unit: Unit) -> None:
        with engine.connect() as conn:
            unit.phase = "insert"
            unit.port = int(conn.exec_driver_sql(INSERT_SQL, (key,)).scalar_one())
            if conn.exec_driver_sql(COUNT_SQL, (key,)).one()[1] != 1:
                raise AssertionError(f"{key} not visible in its own transaction")
            unit.phase = "commit"
            conn.commit()

    def read_back(key: str) -> tuple[int, int]:
        with engine.connect() as conn:
            port, rows = conn.exec_driver_sql(COUNT_SQL, (key,)).one()
            return int(port), int(rows)

    django_proc = _start_django(lab)
    sa = Ledger()
    start = time.monotonic()
    deadline = start + SECONDS
    threads = [threading.Thread(target=writer, name=f"sa{i}", daemon=True,
                                args=(sa, f"sa{i}", deadline, write, read_back, classify))
               for i in range(THREADS)]
    for t in threads:
        t.start()
    driver = FaultDriver(lab, SEED)
    driver.run(until=deadline - min(6.0, SECONDS / 4))  # the last seconds: recovery
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 60)
    sa.hung = sum(t.is_alive() for t in threads)
    stats = engine.pool.stats()  # type: ignore[attr-defined]
    dj, dj_stats = _finish_django(django_proc)
    lab.reset_faults()
    rows = rows_per_server(lab)
    engine.dispose()

    print(f"\nchaos soak: {time.monotonic() - start:.0f} s, seed {SEED}, zones {ZONES}")
    print("faults injected:", dict(driver.injected))
    print("\n".join("  " + line for line in driver.log))
    for name, ledger in (("SQLAlchemy", sa), ("Django", dj)):
        if ledger is None:
            continue
        print(f"{name}: {len(ledger.acked)} rows acknowledged, {len(ledger.aborted)} failed "
              f"before COMMIT, {len(ledger.unknown)} unknown (COMMIT failed); read back "
              f"{dict(ledger.reads)}; slowest unit {ledger.slowest:.2f} s")
        print(f"  errors by type: {dict(ledger.errors)}")
    print(f"rows per zone: { {port_zone[p]: len(r) for p, r in rows.items()} }")

    problems = [f"SQLAlchemy: {p}" for p in verify(sa, rows)]
    assert sa.hung == 0, f"{sa.hung} SQLAlchemy threads hung"
    assert (stats.in_use, stats.waiting) == (0, 0), f"leaked: {stats.in_use} in use"
    if dj is not None:
        problems += [f"Django: {p}" for p in verify(dj, rows)]
        assert dj.hung == 0, f"{dj.hung} Django threads hung"
        assert all(s["in_use"] == 0 and s["waiting"] == 0 for s in dj_stats.values()), dj_stats
    assert not problems, "\n".join(problems[:40])
    # a unit is a checkout (at most timeout), two statements and a COMMIT (each at most
    # query_timeout), plus a stated 3 s for a loaded machine
    bound = POOL["timeout"] + 3 * POOL["query_timeout"] + 3.0
    assert sa.slowest <= bound, f"a unit of work took {sa.slowest:.1f} s (bound {bound:g} s)"
    # the soak did something: faults of every kind over a long run, and progress
    assert len(sa.acked) > 100
    if SECONDS >= 60:
        assert {"kill", "pause", "latency"} <= set(driver.injected)


def _start_django(lab: Any) -> subprocess.Popen[str] | None:
    try:
        import django  # noqa: F401

        import zonal_django.backends.postgresql.base  # noqa: F401
    except Exception as e:  # a broken backend is a failure of this test, not a skip
        pytest.fail(f"the Django backend does not import: {e}")
    spec = {"database": lab.database, "user": lab.user, "password": lab.password,
            "seconds": SECONDS, "threads": THREADS,
            "zonal": {"zones": lab.zones(pgbouncer=False), **POOL}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.soak_django"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def _finish_django(proc: subprocess.Popen[str] | None
                   ) -> tuple[Ledger | None, dict[str, dict[str, int]]]:
    if proc is None:
        return None, {}
    try:
        out, err = proc.communicate(timeout=SECONDS + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the Django writers hung") from None
    lines = out.strip().splitlines()
    assert proc.returncode == 0 and lines, f"Django writers failed:\n{err[-3000:]}"
    data = json.loads(lines[-1])
    return Ledger.from_json(data), data["stats"]


def test_verify_catches_what_it_must() -> None:
    """The soak's checks themselves, on made-up outcomes (no database)."""
    ledger = Ledger(acked={"sa0-0": 1, "sa0-1": 1, "sa0-2": 1, "sa0-3": 2},
                    aborted={"sa0-4"}, unknown={"sa0-5": 1, "sa0-6": 1},
                    undocumented=["insert: KeyError: 'x'"])
    rows = {1: {"sa0-0": 1, "sa0-1": 2, "sa0-4": 1, "sa0-5": 1, "sa0-9": 1},
            2: {"sa0-2": 1, "sa0-3": 1, "sa0-6": 1, "dj0-0": 1}}
    problems = "\n".join(verify(ledger, rows))
    assert "acknowledged sa0-1 has 2 rows" in problems  # stored twice
    assert "acknowledged sa0-2 has 0 rows on port 1" in problems  # lost (moved zone)
    assert "acknowledged sa0-2 also stored on another zone" in problems
    assert "sa0-4 failed before COMMIT but is stored" in problems
    assert "sa0-6: outcome unknown, but stored on another zone" in problems
    assert "1 rows nobody wrote" in problems and "sa0-9" in problems  # dj0-0 is not ours
    assert "undocumented error: insert: KeyError" in problems
    assert "sa0-0" not in problems and "sa0-3" not in problems and "sa0-5" not in problems
