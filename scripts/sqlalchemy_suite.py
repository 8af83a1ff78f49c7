#!/usr/bin/env python3
"""SQLAlchemy's own test suite, with its stock pools and with every engine on zonal's.

Downloads (once, cached) the sdist of the installed SQLAlchemy, which ships its
``test/``; starts one lab zone (real PostgreSQL on loopback); runs a selection of
SQLAlchemy's tests with pytest against the *installed* ``sqlalchemy`` (its testing
plugin, ``sqlalchemy.testing``, is bootstrapped from there, not from the sdist's
``lib/``), once stock and once with every PostgreSQL engine the suite creates put on
``ZonalPool`` / ``ZonalAsyncPool`` (the pytest plugin ``scripts/sqlalchemy_suite/
zonal_everywhere.py``); and compares the outcome of every test, read from pytest's
junit XML, printing each difference with its known reason.

    python scripts/sqlalchemy_suite.py [--runs psycopg psycopg_async asyncpg]
        [--select PATH ...] [--only stock|zonal] [--cache DIR] [--keep-logs DIR]
        [--maxfail N] [--timeout SECONDS] [--slower SECONDS]

A run is one driver (one ``--dburi``) over its paths; a test is identified as
``"<run> <pytest node id>"``, e.g.
``"psycopg test/engine/test_reconnect.py::MockReconnectTest::test_reconnect"``.
A difference is any change of outcome (passed, failed, error, skipped, missing)
between stock and zonal; it is explained only by an entry of EXPECTED for that exact
id whose regular expression matches (``re.search``) the zonal outcome's text (junit
message and details; the skip reason for a skip; empty when zonal passed).

Exit status 0 when every difference is explained, 1 when one is not, 2 when the suite
could not run (download, lab, collection errors, a run with no tests, junit totals
or pytest's exit status that do not add up).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "scripts" / "sqlalchemy_suite"
sys.path.insert(0, str(ROOT / "src"))

# What each run passes to pytest: the URL scheme of its --dburi and its paths
# (relative to the sdist). test/engine/test_pool.py tests QueuePool's internals.
SYNC_PATHS = ["test/engine", "--ignore=test/engine/test_pool.py",
              "test/dialect/postgresql/test_dialect.py",
              "test/dialect/postgresql/test_query.py"]
ASYNC_PATHS = ["test/ext/asyncio/test_engine.py", "test/engine/test_reconnect.py",
               "test/engine/test_execute.py", "test/engine/test_transaction.py",
               "test/dialect/postgresql/test_dialect.py",
               "test/dialect/postgresql/test_query.py",
               "test/dialect/postgresql/test_async_pg.py"]
# run -> (URL scheme, test paths, zonal options for the zonal side)
RUNS: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    "psycopg": ("postgresql+psycopg", SYNC_PATHS, {}),
    "psycopg_async": ("postgresql+psycopg_async", ASYNC_PATHS, {}),
    "asyncpg": ("postgresql+asyncpg", ASYNC_PATHS, {}),
    # zonal skips pre-ping within ping_bypass; with it at 0, SQLAlchemy's own pre-ping
    # tests (handle_error with is_pre_ping, restarts, upgrades and downgrades of a
    # disconnect) must pass on zonal as on QueuePool
    "psycopg_ping_every_checkout": ("postgresql+psycopg", ["test/engine/test_reconnect.py"],
                                    {"ping_bypass": 0}),
}
DATABASE = "test"  # recreated empty before every run, as SQLAlchemy's README asks
# The user the suite connects as: SQLAlchemy's own defaults. (Its tests build URLs by
# replacing the letters D, U, P, PS and H of a pattern, which mangles a password
# that holds them, such as the lab's random one.)
SUITE_USER = ("scott", "tiger")
PHASE_TIMEOUT = 1200.0  # seconds for one pytest run, whatever pytest-timeout does

# Differences between the stock run and the zonal run that are understood, one by
# one: see scripts/sqlalchemy_suite/expected.py.
sys.path.insert(0, str(Path(__file__).resolve().parent / "sqlalchemy_suite"))
from expected import EXPECTED  # noqa: E402

_SERVER_VERSION = re.compile(r"_\d+_\d+(?=::)")
OUTCOMES = ("passed", "skipped", "error", "failed")  # a repeated test keeps the worst


def log(msg: str) -> None:
    print(f"[sqlalchemy_suite] {msg}", flush=True)


class CouldNotRun(Exception):
    """The suite did not run far enough to compare anything (exit status 2)."""


# -- the sdist ----------------------------------------------------------------------

_CONFTEST_PATCH = '''\
# (scripts/sqlalchemy_suite.py) bootstrap the testing plugin of the *installed*
# sqlalchemy, not of the sdist's lib/ (which is not extracted)
import importlib.util as _zonal_util

bootstrap_file = os.path.join(
    _zonal_util.find_spec("sqlalchemy").submodule_search_locations[0],
    "testing", "plugin", "bootstrap.py")

'''
_CONFTEST_ANCHOR = "with open(bootstrap_file) as f:"


def sqlalchemy_tests(cache: Path) -> Path:
    """The installed SQLAlchemy's sdist without ``lib/``: ``test/`` and its pytest
    configuration (``pyproject.toml``, ``setup.cfg``), downloaded once."""
    version = importlib.metadata.version("sqlalchemy")
    target = cache / f"sqlalchemy-{version}"
    if (target / ".complete").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    sdist = next((p for p in cache.glob(f"[sS][qQ][lL][aA]lchemy-{version}.tar.gz")), None)
    if sdist is None:
        log(f"downloading the SQLAlchemy {version} sdist (test/ ships in it)")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                        "--no-deps", "--disable-pip-version-check", f"sqlalchemy=={version}",
                        "-d", str(cache)], check=True)
        sdist = next(cache.glob(f"[sS][qQ][lL][aA]lchemy-{version}.tar.gz"))
    shutil.rmtree(target, ignore_errors=True)
    unpack = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
    wanted = ("test/", "pyproject.toml", "setup.cfg", "tox.ini", "README.unittests.rst")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.partition("/")[2].startswith(wanted)]
        tar.extractall(unpack, members=members, filter="data")
    extracted = next(p for p in unpack.iterdir() if p.is_dir())
    conftest = extracted / "test" / "conftest.py"
    text = conftest.read_text()
    if text.count(_CONFTEST_ANCHOR) != 1 or "sqla_pytestplugin" not in text:
        raise CouldNotRun(f"SQLAlchemy {version}'s test/conftest.py no longer bootstraps "
                          f"its plugin as this script expects ({_CONFTEST_ANCHOR!r})")
    (extracted / "test" / "conftest.py.sdist").write_text(text)
    conftest.write_text(text.replace(_CONFTEST_ANCHOR, _CONFTEST_PATCH + _CONFTEST_ANCHOR))
    extracted.rename(target)
    unpack.rmdir()
    (target / ".complete").write_text(sdist.name + "\n")
    return target


# -- the database -------------------------------------------------------------------

def fresh_database(admin_url: str) -> None:
    """An empty UTF8 database as SQLAlchemy's README.unittests.rst sets it up, owned by
    the suite's user (SUITE_USER): the schemas test_schema and test_schema_2, hstore and
    citext, English full-text search."""
    import psycopg

    user, password = SUITE_USER
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is None:
            conn.execute(f"CREATE ROLE \"{user}\" SUPERUSER LOGIN PASSWORD '{password}'")
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f"CREATE DATABASE \"{DATABASE}\" OWNER \"{user}\" ENCODING 'UTF8' "
                     "TEMPLATE template0")
        conn.execute(f"ALTER DATABASE \"{DATABASE}\" "
                     "SET default_text_search_config = 'pg_catalog.english'")
    test_url = admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"
    with psycopg.connect(test_url, autocommit=True) as conn:
        for statement in (f'CREATE SCHEMA test_schema AUTHORIZATION "{user}"',
                          f'CREATE SCHEMA test_schema_2 AUTHORIZATION "{user}"',
                          "CREATE EXTENSION IF NOT EXISTS hstore",
                          "CREATE EXTENSION IF NOT EXISTS citext"):
            conn.execute(statement)


# -- one pytest run -----------------------------------------------------------------

@dataclass
class Outcome:
    outcome: str  # passed / skipped / error / failed
    text: str = ""  # message and details of the failure, error or skip
    time: float = 0.0  # seconds, setup to teardown


@dataclass
class RunResult:
    outcomes: dict[str, Outcome]
    took: float
    exit_code: int
    report: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.outcome == outcome)

    def summary(self) -> str:
        parts = ", ".join(f"{self.count(o)} {o}" for o in OUTCOMES if self.count(o))
        return f"{len(self.outcomes)} tests ({parts})"


def parse_junit(path: Path, run: str) -> dict[str, Outcome]:
    """Outcome per test id from pytest's junit XML, checked against its totals."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise CouldNotRun(f"{run}: no readable junit XML ({exc})") from None
    suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else \
        tree.getroot().findall("testsuite")
    outcomes: dict[str, Outcome] = {}
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seen = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    collection: list[str] = []
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        for case in suite.iter("testcase"):
            seen["tests"] += 1
            prop = case.find("properties/property[@name='nodeid']")
            nodeid = prop.get("value") if prop is not None else None
            texts: list[str] = []
            outcome = "passed"
            for tag, name, total in (("skipped", "skipped", "skipped"),
                                     ("error", "error", "errors"),
                                     ("failure", "failed", "failures")):
                for node in case.findall(tag):
                    seen[total] += 1
                    outcome = max(outcome, name, key=OUTCOMES.index)
                    texts.append("\n".join(filter(None, (node.get("message"), node.text))))
                    if tag == "error" and node.get("message") == "collection failure":
                        collection.append(f"{case.get('classname')} {node.text or ''}"[:2000])
            if nodeid is None and case.find("skipped[@message='collection skipped']") is not None:
                nodeid = f"{case.get('classname')} (module skipped at collection)"
            if nodeid is None:
                if collection:
                    continue  # (collection errors are reported below)
                raise CouldNotRun(f"{run}: a junit testcase without a node id: "
                                  f"{case.get('classname')}::{case.get('name')} {texts}")
            # (class names carry the server's version, "_18_6": not part of the id)
            key = f"{run} {_SERVER_VERSION.sub('_PG', nodeid)}"
            took = float(case.get("time", "0"))
            previous = outcomes.get(key)
            if previous is not None:  # a failure in call and again in teardown
                outcome = max(outcome, previous.outcome, key=OUTCOMES.index)
                texts.insert(0, previous.text)
                took += previous.time
            outcomes[key] = Outcome(outcome, "\n".join(texts), took)
    if collection:
        raise CouldNotRun(f"{run}: collection errors:\n" + "\n".join(collection))
    if seen != totals:
        raise CouldNotRun(f"{run}: junit XML elements {seen} do not add up to its totals "
                          f"{totals}")
    if not outcomes:
        raise CouldNotRun(f"{run}: no tests ran")
    return outcomes


def run_pytest(tests: Path, run: str, kind: str, url: str, paths: list[str],
               args: argparse.Namespace, logs: Path, options: dict[str, Any]) -> RunResult:
    junit = logs / f"{run}-{kind}.xml"
    report = logs / f"{run}-{kind}.json"
    for stale in (junit, report):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PLUGIN_DIR), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    # only the plugins named here: not pytest-django, hypothesis or zonal's own
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytest_timeout",
           "-p", "zonal_everywhere", f"--dburi={url}", f"--timeout={args.timeout}",
           f"--maxfail={args.maxfail}", f"--junitxml={junit}",
           f"--zonal-suite-report={report}", f"--zonal-suite-forbid={tests}",
           *(["--zonal-pools"] if kind == "zonal" else []),
           *(f"--zonal-option={k}={json.dumps(v)}" for k, v in options.items()), *paths]
    began = time.monotonic()
    with (logs / f"{run}-{kind}.log").open("w") as out:
        out.write("$ " + " ".join(cmd) + "\n\n")
        out.flush()
        try:
            proc = subprocess.run(cmd, cwd=tests, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=PHASE_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise CouldNotRun(f"{run} {kind}: pytest still running after "
                              f"{PHASE_TIMEOUT:.0f}s") from None
    took = time.monotonic() - began
    if proc.returncode not in (0, 1):
        tail = (logs / f"{run}-{kind}.log").read_text(errors="replace").splitlines()[-15:]
        raise CouldNotRun(f"{run} {kind}: pytest exited with status {proc.returncode} "
                          f"(see {logs / f'{run}-{kind}.log'}):\n" + "\n".join(tail))
    result = RunResult(parse_junit(junit, f"{run}"), took, proc.returncode)
    bad = result.count("failed") + result.count("error")
    if (proc.returncode == 1) != (bad > 0):
        raise CouldNotRun(f"{run} {kind}: pytest exited with status {proc.returncode} but "
                          f"the junit XML has {bad} failures and errors")
    try:
        result.report = json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        raise CouldNotRun(f"{run} {kind}: no report from zonal_everywhere ({exc})") from None
    pool = result.report.get("testing_db_pool") or ""
    if (kind == "zonal") != pool.startswith("Zonal"):
        raise CouldNotRun(f"{run} {kind}: SQLAlchemy's testing engine has a {pool} pool")
    return result


# -- comparison ---------------------------------------------------------------------

def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def compare(stock: dict[str, Outcome], zonal: dict[str, Outcome]) -> tuple[int, int]:
    """Print every difference with its reason; return (explained, unexplained)."""
    explained = unexplained = 0
    for key in sorted(set(stock) | set(zonal)):
        a, b = stock.get(key), zonal.get(key)
        was = a.outcome if a else "missing"
        now = b.outcome if b else "missing"
        if was == now:
            if key in EXPECTED:
                log(f"note: {key} is in EXPECTED but no longer differs ({was})")
            continue
        text = (b.text if b else "missing from the zonal run") if now != "passed" else ""
        entry = EXPECTED.get(key)
        if entry is None:
            reason = "UNEXPLAINED"
        elif not re.search(entry[0], text, re.S):
            reason = (f"UNEXPLAINED: listed, but the zonal text does not match "
                      f"{entry[0]!r} (listed reason: {entry[1]})")
        else:
            reason = entry[1]
        if reason.startswith("UNEXPLAINED"):
            unexplained += 1
        else:
            explained += 1
        detail = first_line(text) or (f"stock: {first_line(a.text)}" if a and a.text else "")
        print(f"  {key}: stock={was} zonal={now}")
        if detail:
            print(textwrap.indent(textwrap.shorten(detail, 300), "      | "))
        print(textwrap.indent(textwrap.fill(reason, 90), "      "))
    return explained, unexplained


def slower(stock: dict[str, Outcome], zonal: dict[str, Outcome], margin: float) -> None:
    """Note the tests that took ``margin`` seconds longer on zonal (not a failure: a
    wait, such as a checkout that runs out its pool timeout, that the outcome hides)."""
    for key in sorted(set(stock) & set(zonal), key=lambda k: stock[k].time - zonal[k].time):
        extra = zonal[key].time - stock[key].time
        if extra < margin:
            break
        log(f"note: {key} took {zonal[key].time:.1f}s on zonal, {stock[key].time:.1f}s stock")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS),
                        help="drivers to run (default: all)")
    parser.add_argument("--select", nargs="+", metavar="PATH",
                        help="pytest paths or node ids (relative to the sdist) instead of "
                             "each run's default selection")
    parser.add_argument("--only", choices=("zonal", "stock"))
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "sqlalchemy-suite")
    parser.add_argument("--keep-logs", type=Path,
                        help="keep pytest's output, junit XML and reports here")
    parser.add_argument("--maxfail", type=int, default=100_000,
                        help="pytest --maxfail (SQLAlchemy's own configuration says 250)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="pytest-timeout: seconds one test may take")
    parser.add_argument("--slower", type=float, default=5.0, metavar="SECONDS",
                        help="note tests that take this much longer on zonal")
    args = parser.parse_args(argv)

    from zonal_lab import Lab

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="zonal-sqlalchemy-suite-"))
    logs = args.keep_logs or work
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, RunResult]] = {"stock": {}, "zonal": {}}
    try:
        tests = sqlalchemy_tests(args.cache)
        log(f"SQLAlchemy {importlib.metadata.version('sqlalchemy')} tests in {tests} "
            f"(ready in {time.monotonic() - began:.1f}s)")
        settings = {"max_connections": 200, "fsync": "off", "synchronous_commit": "off",
                    "full_page_writes": "off", "max_prepared_transactions": 10}
        with Lab(zones=["a"], server_settings=settings) as lab:
            zone = lab["a"]
            endpoint = zone.endpoint(pgbouncer=False, proxy=False)
            log(f"lab zone a at {endpoint} (started in {lab.started_in:.1f}s)")
            for run in args.runs:
                scheme, default_paths, zonal_options = RUNS[run]
                if not importlib.util.find_spec(scheme.partition("+")[2].split("_")[0]):
                    raise CouldNotRun(f"{run}: its driver is not installed")
                paths = args.select or default_paths
                url = f"{scheme}://{SUITE_USER[0]}:{SUITE_USER[1]}@{endpoint}/{DATABASE}"
                for kind in ("stock", "zonal"):
                    if args.only and kind != args.only:
                        continue
                    fresh_database(zone.url())
                    log(f"{run} {kind}: pytest {' '.join(paths)}")
                    result = run_pytest(tests, run, kind, url, paths, args, logs,
                                        zonal_options if kind == "zonal" else {})
                    log(f"{run} {kind}: {result.summary()} in {result.took:.1f}s "
                        f"(exit {result.exit_code}); engines {result.report['engines']}")
                    results[kind][run] = result
    except CouldNotRun as exc:
        log(f"could not run: {exc}")
        log(f"logs in {logs}")
        return 2
    except (subprocess.CalledProcessError, OSError) as exc:
        log(f"could not run: {exc!r}")
        return 2
    log(f"total {time.monotonic() - began:.1f}s; logs in {logs}")
    if args.only:  # one side only: nothing to compare, but it must have passed
        return 1 if any(r.exit_code for side in results.values() for r in side.values()) else 0
    explained = unexplained = 0
    for run in args.runs:
        stock, zonal = results["stock"][run].outcomes, results["zonal"][run].outcomes
        slower(stock, zonal, args.slower)
        e, u = compare(stock, zonal)
        explained += e
        unexplained += u
        log(f"{run}: stock {sum(o.outcome == 'passed' for o in stock.values())}/{len(stock)} "
            f"passed, zonal {sum(o.outcome == 'passed' for o in zonal.values())}/{len(zonal)}"
            f" passed; {e} explained, {u} unexplained")
    log(f"{explained} explained difference(s), {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
