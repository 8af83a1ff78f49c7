#!/usr/bin/env python3
"""Django's own test suite, with the stock PostgreSQL backend and with zonal's.

Downloads (once, cached) the sdist of the installed Django, which ships its
``tests/``; starts one lab zone (real PostgreSQL on loopback); runs the labels below
with ``ENGINE = django.db.backends.postgresql`` and then with
``ENGINE = zonal_django.backends.postgresql`` on both aliases (``default`` and
``other``), and compares the outcome of every test, printing each difference with
its known reason.

    python scripts/django_suite.py [--labels backends transactions ...] [--parallel N]
        [--cache DIR] [--only zonal|stock] [--keep-logs DIR]

Exit status 0 when every difference is an expected one (EXPECTED below), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LABELS = ["backends", "transactions", "transaction_hooks", "basic", "queries",
          "select_for_update", "db_utils", "handlers", "async", "test_utils", "sessions_tests"]

# Tests whose outcome differs by design, and why. Keys are regular expressions
# matched against "module.Class.test_name".
EXPECTED: dict[str, str] = {
    r"backends\.postgresql\.tests\.Tests\.(test_connect_pool\w*|test_pool\w*)":
        "Django's native-pool tests: they set OPTIONS['pool'] (psycopg_pool) and inspect "
        "connection.pool; zonal is the pool and refuses OPTIONS['pool'] by design with "
        "ImproperlyConfigured (zonal.E002), whose message is not Django's",
    r"backends\.base\.test_base\.ConnectionHealthChecksTests\.\w+":
        "Django's persistent-connection health checks: the tests set CONN_MAX_AGE=None; zonal "
        "requires CONN_MAX_AGE=0 by design (ImproperlyConfigured, zonal.E003): the pool keeps "
        "connections open, and CONN_HEALTH_CHECKS becomes the pool's pre_ping",
}


def log(msg: str) -> None:
    print(f"[django_suite] {msg}", flush=True)


def django_tests(cache: Path) -> Path:
    """The ``tests/`` folder of the installed Django's sdist (downloaded once)."""
    version = importlib.metadata.version("django")
    target = cache / f"django-{version}"
    tests = target / "tests"
    if (tests / "runtests.py").exists():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading the Django {version} sdist (tests/ ship in it)")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                    "--no-deps", "--disable-pip-version-check", f"django=={version}",
                    "-d", str(cache)], check=True)
    sdist = next(p for p in cache.iterdir() if p.name.lower().startswith("django-")
                 and p.name.endswith(".tar.gz") and version in p.name)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name]
        tar.extractall(cache, members=members, filter="data")
    extracted = next(p for p in cache.iterdir() if p.is_dir() and p.name.lower() ==
                     f"django-{version}")
    if extracted != target:
        extracted.rename(target)
    return tests


SETTINGS = """\
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False

def _db(name):
    entry = {{"ENGINE": {engine!r}, "NAME": name, "USER": {user!r}, "PASSWORD": {password!r}}}
    if {zonal!r}:
        entry["OPTIONS"] = {{"zonal": {{"zones": {{"a": {endpoint!r}}}, "timeout": 10}}}}
    else:
        entry["HOST"], entry["PORT"] = {host!r}, {port!r}
    return entry

DATABASES = {{"default": _db("django_suite"), "other": _db("django_suite_other")}}
"""

_RESULT = re.compile(
    r"^(?P<name>test\w*) \((?P<where>[\w.]+)\)(?:\n(?!test\w* \()[^\n]*)?? \.\.\. "
    r"(?P<outcome>ok|FAIL|ERROR|skipped|expected failure|unexpected success)",
    re.M)


def run_suite(tests: Path, settings_dir: Path, settings_module: str, labels: list[str],
              parallel: int, logfile: Path) -> tuple[dict[str, str], float, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(settings_dir), str(ROOT / "src"),
                                         env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "runtests.py", f"--settings={settings_module}", "-v", "2",
           f"--parallel={parallel}", "--noinput", *labels]
    began = time.monotonic()
    with logfile.open("w") as out:
        proc = subprocess.run(cmd, cwd=tests, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=1800, check=False)
    took = time.monotonic() - began
    text = logfile.read_text(errors="replace")
    results: dict[str, str] = {}
    for m in _RESULT.finditer(text):
        where = m["where"]
        key = where if where.endswith("." + m["name"]) else f"{where}.{m['name']}"
        results[key] = m["outcome"]
    summary = next((line for line in reversed(text.splitlines())
                    if line.startswith(("OK", "FAILED"))), f"exit {proc.returncode}")
    ran = next((line for line in reversed(text.splitlines()) if line.startswith("Ran ")), "")
    return results, took, f"{ran}; {summary}"


def passed(outcome: str | None) -> bool:
    return outcome in ("ok", "skipped", "expected failure")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", nargs="*", default=LABELS)
    # Django's parallel runner needs tblib to report a failure (without it the first
    # failing test aborts the run): parallel only where tblib is installed.
    parser.add_argument("--parallel", type=int, default=(os.cpu_count() or 1)
                        if importlib.util.find_spec("tblib") else 1)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME",
                                                    Path.home() / ".cache")) / "zonal")
    parser.add_argument("--only", choices=("zonal", "stock"))
    parser.add_argument("--keep-logs", type=Path)
    args = parser.parse_args(argv)

    from zonal_lab import Lab

    tests = django_tests(args.cache)
    work = Path(tempfile.mkdtemp(prefix="zonal-django-suite-"))
    logs = args.keep_logs or work
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with Lab(zones=["a"], server_settings={"max_connections": 200, "fsync": "off"}) as lab:
        endpoint = lab["a"].endpoint(pgbouncer=False, proxy=False)
        host, port = endpoint.rsplit(":", 1)
        log(f"lab zone a at {endpoint} (started in {lab.started_in:.1f}s)")
        outcomes: dict[str, dict[str, str]] = {}
        engines = {"stock": "django.db.backends.postgresql",
                   "zonal": "zonal_django.backends.postgresql"}
        for kind, engine in engines.items():
            if args.only and kind != args.only:
                continue
            module = f"suite_{kind}"
            (work / f"{module}.py").write_text(SETTINGS.format(
                engine=engine, user=lab.user, password=lab.password, zonal=kind == "zonal",
                endpoint=endpoint, host=host, port=port))
            log(f"running {len(args.labels)} labels with {engine} (parallel {args.parallel})")
            results, took, summary = run_suite(tests, work, module, args.labels,
                                               args.parallel, logs / f"{kind}.log")
            counts = {o: sum(1 for v in results.values() if v == o)
                      for o in sorted(set(results.values()))}
            log(f"{kind}: {summary} in {took:.1f}s; parsed {len(results)} results {counts}")
            outcomes[kind] = results
    log(f"total {time.monotonic() - began:.1f}s; logs in {logs}")
    if len(outcomes) < 2:
        return 0
    stock, zonal = outcomes["stock"], outcomes["zonal"]
    unexpected = 0
    for key in sorted(set(stock) | set(zonal)):
        a, b = stock.get(key), zonal.get(key)
        if passed(a) == passed(b):
            continue
        reason = next((why for pat, why in EXPECTED.items() if re.fullmatch(pat, key)), None)
        if reason is None:
            unexpected += 1
        print(f"  {key}: stock={a} zonal={b}\n"
              + textwrap.indent(textwrap.fill(reason or "UNEXPLAINED", 90), "      "))
    n_stock = sum(passed(v) for v in stock.values())
    n_zonal = sum(passed(v) for v in zonal.values())
    print(f"passed: stock {n_stock}/{len(stock)}, zonal {n_zonal}/{len(zonal)}; "
          f"{unexpected} unexplained difference(s)")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
