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

The outcomes are read from ``runtests.py -v 2``: one line per test
(``test_x (module.Class.test_x) ... ok``; ``FAIL``, ``ERROR``, ``skipped '...'``,
``expected failure``, ``unexpected success``), one per failing subtest
(``  test_x (module.Class.test_x) (n=1) ... FAIL``: the test's outcome), one per
class or module fixture that failed (``setUpClass (module.Class) ... ERROR``: the id
``module.Class.setUpClass``), and the details after the ``=====`` separators
(``ERROR: test_x (...)`` and its traceback: the test's text). Each run's results must
add up: as many tests as ``Ran N``, as many FAIL, ERROR, skipped, expected failure
and unexpected success lines as the ``OK (...)`` / ``FAILED (...)`` line counts, a
traceback for every FAIL and ERROR, and the exit status 0 with ``OK``, 1 with
``FAILED``.

A difference is any change of outcome (ok, FAIL, ERROR, skipped, expected failure,
unexpected success, missing) between stock and zonal. It is explained only by the
entry of EXPECTED for that exact test id, when the zonal outcome is the one listed and
its text (the tracebacks; the reason of a skip) matches the entry's regular expression
(``re.search``). An entry whose test ran and does not differ is an error too (the list
is exact); one whose test is in neither run (another Django version) is a note.
``--only zonal`` passes when every FAIL, ERROR and unexpected success is such an
entry; ``--only stock`` when there is none.

Exit status 0 when every difference is explained, 1 when one is not (or a listed one
did not happen), 2 when the suite could not run (download, lab, a timeout, an exit
status other than 0 or 1, or output whose results do not add up as above).
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LABELS = ["backends", "transactions", "transaction_hooks", "basic", "queries",
          "select_for_update", "db_utils", "handlers", "async", "test_utils", "sessions_tests"]
RUN_TIMEOUT = 1800.0  # seconds for one runtests.py

# zonal's refusals, as the tracebacks print them (zonal_django.conf, zonal.E002 / E003)
_E002 = (r"DATABASES\['default_pool'\]\['OPTIONS'\]\['pool'\] turns on Django's own "
         r"connection pool, but zonal_django is the pool")
_E003 = (r"DATABASES\['default'\]\['CONN_MAX_AGE'\] is None: persistent connections bypass "
         r"the pool")
NATIVE_POOL = (
    "Django's native-pool test: it sets OPTIONS['pool'] (psycopg_pool) and uses "
    "connection.pool; zonal_django is the pool and refuses OPTIONS['pool'] by design with "
    "ImproperlyConfigured (zonal.E002)")
NATIVE_POOL_MESSAGE = (
    "Django's native-pool test: it expects Django's own refusal of OPTIONS['pool'] with "
    "CONN_MAX_AGE=None ('Pooling doesn't support persistent connections.'); zonal_django "
    "refuses OPTIONS['pool'] first, with its own message (zonal.E002)")
PERSISTENT = (
    "Django's persistent-connection health checks: the test sets CONN_MAX_AGE=None; "
    "zonal_django requires CONN_MAX_AGE=0 by design (ImproperlyConfigured, zonal.E003): the "
    "pool keeps connections open, and CONN_HEALTH_CHECKS becomes the pool's pre_ping")

# The differences between the stock run and the zonal run that are understood, one by
# one: test id -> (the zonal outcome, a regular expression its text must match, why).
EXPECTED: dict[str, tuple[str, str, str]] = {
    "backends.postgresql.tests.Tests.test_connect_pool":
        ("ERROR", rf"ImproperlyConfigured: {_E002}", NATIVE_POOL),
    "backends.postgresql.tests.Tests.test_connect_pool_set_to_true":
        ("ERROR", rf"ImproperlyConfigured: {_E002}", NATIVE_POOL),
    "backends.postgresql.tests.Tests.test_connect_pool_with_timezone":
        ("ERROR", rf"ImproperlyConfigured: {_E002}", NATIVE_POOL),
    "backends.postgresql.tests.Tests.test_pooling_health_checks":
        ("ERROR", rf"ImproperlyConfigured: {_E002}", NATIVE_POOL),
    "backends.postgresql.tests.Tests.test_pooling_not_support_persistent_connections":
        ("FAIL", rf"AssertionError: \"Pooling doesn't support persistent connections\.\" "
                 rf"not found in \"{_E002}", NATIVE_POOL_MESSAGE),
    "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_disabled":
        ("ERROR", rf"ImproperlyConfigured: {_E003}", PERSISTENT),
    "backends.base.test_base.ConnectionHealthChecksTests.test_health_checks_enabled":
        ("ERROR", rf"ImproperlyConfigured: {_E003}", PERSISTENT),
    "backends.base.test_base.ConnectionHealthChecksTests"
    ".test_health_checks_enabled_errors_occurred":
        ("ERROR", rf"ImproperlyConfigured: {_E003}", PERSISTENT),
    "backends.base.test_base.ConnectionHealthChecksTests"
    ".test_set_autocommit_health_checks_enabled":
        ("ERROR", rf"ImproperlyConfigured: {_E003}", PERSISTENT),
}


def log(msg: str) -> None:
    print(f"[django_suite] {msg}", flush=True)


class CouldNotRun(Exception):
    """The suite did not run, or its output does not add up (exit status 2)."""


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


# -- reading runtests.py -v 2 ----------------------------------------------------------

# worst last: the outcome of a test with several lines (failing subtests; a class
# fixture's error that Django's parallel runner reports against the test before it)
OUTCOMES = ("ok", "skipped", "expected failure", "unexpected success", "FAIL", "ERROR")
BAD = ("FAIL", "ERROR", "unexpected success")
CLASS_FIXTURES = ("setUpClass", "tearDownClass", "setUpModule", "tearDownModule")
# the summary's names for the counts of the lines
SUMMARY_NAMES = {"failures": "FAIL", "errors": "ERROR", "skipped": "skipped",
                 "expected failures": "expected failure",
                 "unexpected successes": "unexpected success"}

# "name (where)" and what follows on the line: a subtest's "(n=1)" / "[msg]"
_DESC = r"(?P<name>\w+) \((?P<where>[\w.]+)\)(?P<suffix>[^\n]*?)"
# a result line; a docstring's first line may come between the description and " ... ";
# the status is empty on the first line of a test whose subtests fail
_STATUS = re.compile(
    rf"^(?P<sub>  )?{_DESC}(?:\n[^\n]*?)?? \.\.\. "
    r"(?P<status>ok|FAIL|ERROR|skipped (?P<reason>'[^\n]*'|\"[^\n]*\")|expected failure"
    r"|unexpected success|)$", re.M)
_SEP1, _SEP2 = "=" * 70, "-" * 70
_HEADER = r"(?:ERROR|FAIL|UNEXPECTED SUCCESS): "
_DETAIL = re.compile(
    rf"^{_SEP1}\n(?P<flavour>ERROR|FAIL): (?P<desc>[^\n]*)\n(?:[^\n]*\n)??{_SEP2}\n"
    rf"(?P<err>.*?)(?=^{_SEP1}\n{_HEADER}|\Z)", re.M | re.S)
_RAN = re.compile(rf"^{_SEP2}\nRan (?P<n>\d+) tests? in [\d.]+s\n\n"
                  r"(?P<summary>(?:OK|FAILED)(?: \((?P<counts>[^\n]*)\))?)$", re.M)


@dataclass
class Outcome:
    outcome: str  # one of OUTCOMES
    text: str = ""  # the tracebacks of a FAIL or ERROR; the reason of a skip
    lines: list[str] = field(default_factory=list)  # every status it was given


@dataclass
class RunResult:
    outcomes: dict[str, Outcome]  # test id ("module.Class.test_x") -> outcome
    ran: int
    summary: str  # the OK / FAILED line
    exit_code: int
    took: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.outcome == outcome)

    def describe(self) -> str:
        parts = ", ".join(f"{self.count(o)} {o}" for o in OUTCOMES if self.count(o))
        return f"Ran {self.ran}; {self.summary}; parsed {len(self.outcomes)} ids ({parts})"


def test_id(name: str, where: str) -> str:
    """``module.Class.test_x`` (``where`` ends with the name from Python 3.11 on);
    ``module.Class.setUpClass`` for a class or module fixture."""
    return where if where.endswith("." + name) else f"{where}.{name}"


def _is_fixture(name: str, where: str) -> bool:
    return name in CLASS_FIXTURES and not where.endswith("." + name)


def parse_output(text: str, exit_code: int, run: str = "run") -> RunResult:
    """The outcome of every test in the output of ``runtests.py -v 2``, checked: the
    tests add up to ``Ran N``, the lines to the summary's counts, the exit status to
    the summary; CouldNotRun when they do not."""
    ran_at = list(_RAN.finditer(text))
    if not ran_at:
        raise CouldNotRun(f"{run}: no 'Ran N tests' with an OK/FAILED line after it "
                          f"(exit status {exit_code}); the end of the output:\n"
                          + "\n".join(text.splitlines()[-15:]))
    end = ran_at[-1]
    ran = int(end["n"])
    summary = end["summary"]
    body = text[:end.start()]
    # the details: from the first "=====" followed by "ERROR: " / "FAIL: " on
    first = re.search(rf"^{_SEP1}\n{_HEADER}", body, re.M)
    results, details = (body[:first.start()], body[first.start():]) if first else (body, "")

    outcomes: dict[str, Outcome] = {}
    lines: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    tests: set[str] = set()  # ids of tests (not of class fixtures): what Ran counts
    for m in _STATUS.finditer(results):
        name, where, status = m["name"], m["where"], m["status"]
        key = test_id(name, where)
        if not _is_fixture(name, where):
            tests.add(key)
        if not status:  # the first line of a test whose subtests fail
            outcomes.setdefault(key, Outcome(""))
            continue
        outcome = "skipped" if status.startswith("skipped") else status
        lines[outcome] += 1
        o = outcomes.setdefault(key, Outcome(""))
        o.lines.append(status)
        if not o.outcome or OUTCOMES.index(outcome) > OUTCOMES.index(o.outcome):
            o.outcome = outcome
        if outcome == "skipped" and not o.text:
            o.text = m["reason"][1:-1]
    silent = sorted(k for k, o in outcomes.items() if not o.outcome)
    if silent:
        raise CouldNotRun(f"{run}: no outcome read for {len(silent)} test(s): "
                          + ", ".join(silent[:5]))

    texts: dict[str, list[str]] = {}
    flavours = {"FAIL": 0, "ERROR": 0}
    for m in _DETAIL.finditer(details):
        desc = re.fullmatch(_DESC, m["desc"])
        if desc is None:
            raise CouldNotRun(f"{run}: a {m['flavour']} whose test is not read: {m['desc']!r}")
        key = test_id(desc["name"], desc["where"])
        if key not in outcomes or outcomes[key].outcome not in BAD:
            raise CouldNotRun(f"{run}: a {m['flavour']} for {key}, whose result line says "
                              f"{outcomes[key].lines if key in outcomes else 'nothing'}")
        flavours[m["flavour"]] += 1
        texts.setdefault(key, []).append(f"{m['flavour']}: {m['desc']}\n{m['err'].rstrip()}")
    for key, parts in texts.items():
        outcomes[key].text = "\n\n".join(parts)

    counts = dict.fromkeys(OUTCOMES[1:], 0)
    for part in filter(None, (end["counts"] or "").split(", ")):
        label, _, value = part.rpartition("=")
        if label not in SUMMARY_NAMES or not value.isdigit():
            raise CouldNotRun(f"{run}: an unknown count {part!r} in {summary!r}")
        counts[SUMMARY_NAMES[label]] = int(value)
    problems = []
    if len(tests) != ran:
        problems.append(f"{len(tests)} tests read, but 'Ran {ran}'")
    for outcome, n in counts.items():
        if lines[outcome] != n:
            problems.append(f"{lines[outcome]} {outcome!r} lines, but {summary!r}")
    for flavour, n in flavours.items():
        if n != counts[flavour]:
            problems.append(f"{n} {flavour} tracebacks, but {summary!r}")
    failed = any(counts[o] for o in BAD)
    if summary.startswith("OK") == failed:
        problems.append(f"{summary!r} with {[(o, counts[o]) for o in BAD]}")
    if exit_code != (1 if summary.startswith("FAILED") else 0):
        problems.append(f"exit status {exit_code} with {summary!r}")
    if ran == 0:
        problems.append("no tests ran")
    if problems:
        raise CouldNotRun(f"{run}: the output does not add up: " + "; ".join(problems))
    return RunResult(outcomes, ran, summary, exit_code)


def run_suite(tests: Path, settings_dir: Path, settings_module: str, labels: list[str],
              parallel: int, logfile: Path, run: str) -> RunResult:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(settings_dir), str(ROOT / "src"),
                                         env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "runtests.py", f"--settings={settings_module}", "-v", "2",
           f"--parallel={parallel}", "--noinput", *labels]
    began = time.monotonic()
    with logfile.open("w") as out:
        try:
            proc = subprocess.run(cmd, cwd=tests, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise CouldNotRun(f"{run}: runtests.py still running after {RUN_TIMEOUT:.0f}s "
                              f"(see {logfile})") from None
    took = time.monotonic() - began
    text = logfile.read_text(errors="replace")
    if proc.returncode not in (0, 1):
        raise CouldNotRun(f"{run}: runtests.py exited with status {proc.returncode} (see "
                          f"{logfile}):\n" + "\n".join(text.splitlines()[-15:]))
    result = parse_output(text, proc.returncode, run)
    result.took = took
    return result


# -- comparison -----------------------------------------------------------------------

def first_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines())
                 if line.strip() and not line.startswith((" ", "Traceback"))), "")


def explain(key: str, outcome: Outcome | None) -> str | None:
    """The reason EXPECTED gives for ``key``'s zonal ``outcome``; None if it gives none."""
    entry = EXPECTED.get(key)
    if entry is None or outcome is None:
        return None
    want, pattern, reason = entry
    if outcome.outcome != want or not re.search(pattern, outcome.text):
        return None
    return reason


def compare(stock: dict[str, Outcome], zonal: dict[str, Outcome]) -> tuple[int, int]:
    """Print every difference with its reason, and every listed one that did not
    happen; return (explained, unexplained)."""
    explained = unexplained = 0
    for key in sorted(set(stock) | set(zonal) | set(EXPECTED)):
        a, b = stock.get(key), zonal.get(key)
        was = a.outcome if a else "missing"
        now = b.outcome if b else "missing"
        entry = EXPECTED.get(key)
        if was == now:
            if entry is None:
                continue
            if a is None:  # in neither run: a test of another Django version
                log(f"note: {key} (in EXPECTED) is not in this Django's suite")
                continue
            unexplained += 1
            print(f"  {key}: stock={was} zonal={now}\n      UNEXPLAINED: listed in EXPECTED "
                  f"(zonal {entry[0]}), but it does not differ")
            continue
        reason = explain(key, b)
        if reason is None:
            unexplained += 1
            reason = "UNEXPLAINED" if entry is None else (
                f"UNEXPLAINED: listed as zonal {entry[0]} matching {entry[1]!r}, but it is "
                f"not (listed reason: {entry[2]})")
        else:
            explained += 1
        print(f"  {key}: stock={was} zonal={now}")
        detail = first_line(b.text) if b else "missing from the zonal run"
        if detail:
            print(textwrap.indent(textwrap.shorten(detail, 300), "      | "))
        print(textwrap.indent(textwrap.fill(reason, 90), "      "))
    return explained, unexplained


def check_alone(kind: str, result: RunResult) -> int:
    """``--only``: the number of failing tests that EXPECTED does not explain (every
    one, on the stock side)."""
    bad = 0
    for key, outcome in sorted(result.outcomes.items()):
        if outcome.outcome not in BAD:
            continue
        reason = explain(key, outcome) if kind == "zonal" else None
        if reason is None:
            bad += 1
        print(f"  {key}: {kind}={outcome.outcome}\n"
              + textwrap.indent(textwrap.shorten(first_line(outcome.text), 300), "      | ")
              + "\n" + textwrap.indent(textwrap.fill(reason or "UNEXPLAINED", 90), "      "))
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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

    work = Path(tempfile.mkdtemp(prefix="zonal-django-suite-"))
    logs = args.keep_logs or work
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    results: dict[str, RunResult] = {}
    try:
        tests = django_tests(args.cache)
        with Lab(zones=["a"], server_settings={"max_connections": 200, "fsync": "off"}) as lab:
            endpoint = lab["a"].endpoint(pgbouncer=False, proxy=False)
            host, port = endpoint.rsplit(":", 1)
            log(f"lab zone a at {endpoint} (started in {lab.started_in:.1f}s)")
            engines = {"stock": "django.db.backends.postgresql",
                       "zonal": "zonal_django.backends.postgresql"}
            for kind, engine in engines.items():
                if args.only and kind != args.only:
                    continue
                module = f"suite_{kind}"
                (work / f"{module}.py").write_text(SETTINGS.format(
                    engine=engine, user=lab.user, password=lab.password,
                    zonal=kind == "zonal", endpoint=endpoint, host=host, port=port))
                log(f"running {len(args.labels)} labels with {engine} "
                    f"(parallel {args.parallel})")
                result = run_suite(tests, work, module, args.labels, args.parallel,
                                   logs / f"{kind}.log", kind)
                log(f"{kind}: {result.describe()} in {result.took:.1f}s "
                    f"(exit {result.exit_code})")
                results[kind] = result
    except CouldNotRun as exc:
        log(f"could not run: {exc}")
        log(f"logs in {logs}")
        return 2
    except (subprocess.CalledProcessError, OSError, StopIteration) as exc:
        log(f"could not run: {exc!r}")
        return 2
    log(f"total {time.monotonic() - began:.1f}s; logs in {logs}")
    if args.only:
        bad = check_alone(args.only, results[args.only])
        log(f"{args.only}: {bad} failing test(s) that EXPECTED does not explain")
        return 1 if bad else 0
    stock, zonal = results["stock"].outcomes, results["zonal"].outcomes
    explained, unexplained = compare(stock, zonal)
    log(f"ok: stock {results['stock'].count('ok')}/{len(stock)}, zonal "
        f"{results['zonal'].count('ok')}/{len(zonal)}; {explained} explained "
        f"difference(s), {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
