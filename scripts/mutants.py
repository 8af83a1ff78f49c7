#!/usr/bin/env python3
"""Deliberate bugs, applied one at a time: each must make at least one test fail.

Copies ``src/``, ``tests/`` and ``pyproject.toml`` of this checkout (the working
tree: tracked files and untracked ones git does not ignore) to a scratch folder
once. Runs each mutant's test selection there unmutated first (the baseline: a
selection that fails on the real code would "kill" every mutant). Then, for each
mutant: applies its edits to the scratch copy (each original snippet must occur
exactly once, else the mutant is stale and the script stops), checks that Python
imports the mutated modules from the scratch copy (the venv's editable install of
zonal points at this checkout's ``src/``: ``PYTHONPATH`` puts the scratch ``src/``
first), runs ``pytest -x -q -p no:randomly`` on the selection, and restores the
files. Nothing under this checkout's ``src/`` is ever written.

    scripts/mutants [--list] [--only NAME ...] [--timeout SECONDS] [--no-baseline]
                    [--keep] [-v]

Outcome per mutant: ``killed`` (pytest exit status 1: a test failed, named in the
table), ``survived`` (exit status 0: a test gap) or ``error`` (any other status, a
timeout, or the import probe failed). Exit status 0 when every mutant was killed,
1 when one survived, 2 on an error (a stale snippet, a failing baseline, ...).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("src", "tests", "pyproject.toml")
CORE_DIR = "tests/core"


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    path: str  # relative to the repository
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple[Edit, ...]
    #: pytest arguments; "tests/core" is expanded to its files, those named
    #: before it first (pytest would otherwise merge them into the folder's order)
    tests: tuple[str, ...]


def core(*first: str) -> tuple[str, ...]:
    """All of tests/core, the files most likely to fail first (-x stops there)."""
    return (*(f"{CORE_DIR}/{f}" for f in first), CORE_DIR)


STATE = "src/zonal_core/state.py"
HEALTH = "src/zonal_core/health.py"
FLOW = "src/zonal_core/flow.py"
DRIVER = "src/zonal_core/psycopg_driver.py"
DJANGO_BACKEND = "src/zonal_django/backends/postgresql/base.py"
CONFIG = "src/zonal_core/config.py"
TOPOLOGY = "src/zonal_core/topology.py"
SECRETS = "src/zonal_core/secrets.py"

QUERY_TIMEOUT_TESTS = (
    "tests/reliability/test_no_statement_retry.py::"
    "test_query_timeout_during_an_insert_is_an_error_and_never_a_retry",
    "tests/reliability/test_no_statement_retry.py::test_core_pool_with_the_psycopg_driver",
)
SESSION_ATTRS_TESTS = (
    "tests/sqlalchemy/test_session_attrs.py::"
    "test_read_write_fails_over_from_a_read_only_zone[psycopg]",
    "tests/sqlalchemy/test_session_attrs.py::test_no_read_write_zone_fails_saying_why[psycopg]",
)

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "cap-off-by-one",
        "a zone opens pool_size + 1 connections",
        (Edit(STATE, "        if z.size >= self.config.pool_size:\n            return False",
              "        if z.size > self.config.pool_size:\n            return False"),),
        core("test_pool.py"),
    ),
    Mutant(
        "total-cap-off-by-one",
        "the pool opens max_total + 1 connections across zones",
        (Edit(STATE, "        if self.total < self.config.max_total:",
              "        if self.total <= self.config.max_total:"),),
        core("test_pool.py"),
    ),
    Mutant(
        "ejection-never-ends",
        "an ejected endpoint is never probed again",
        (Edit(HEALTH, "            and now >= self.ejected_until\n",
              "            and now >= float('inf')\n"),),
        core("test_pool.py"),
    ),
    Mutant(
        "failback-without-hysteresis",
        "one good connect after the probe ends probation (failback_after ignored)",
        (Edit(HEALTH, "        if self.state is HealthState.PROBATION and now >= "
                      "self.probation_since + failback_after:",
              "        if self.state is HealthState.PROBATION:"),),
        core("test_pool.py"),
    ),
    Mutant(
        "last-capacity-ejected",
        "the pool's last healthy endpoint may be ejected",
        (Edit(STATE, "                if other is not h and other.state is not "
                     "HealthState.EJECTED:",
              "                if True:"),),
        core("test_pool.py"),
    ),
    Mutant(
        "pre-ping-never",
        "pre_ping never pings, however long a connection sat idle",
        (Edit(STATE, "            if cfg.pre_ping and now - rec.last_used > cfg.ping_bypass:",
              "            if cfg.pre_ping and False:"),
         Edit(STATE, "ping=cfg.pre_ping and now - rec.last_used > cfg.ping_bypass)",
              "ping=cfg.pre_ping and False)")),
        core("test_pool.py"),
    ),
    Mutant(
        "ping-bypass-ignored",
        "pre_ping pings even a connection used a moment ago (ping_bypass ignored)",
        (Edit(STATE, "            if cfg.pre_ping and now - rec.last_used > cfg.ping_bypass:",
              "            if cfg.pre_ping and now - rec.last_used >= 0:"),
         Edit(STATE, "ping=cfg.pre_ping and now - rec.last_used > cfg.ping_bypass)",
              "ping=cfg.pre_ping and now - rec.last_used >= 0)")),
        core("test_pool.py"),
    ),
    Mutant(
        "ping-error-ejects",
        "a failed (not timed-out) pre-ping counts against the endpoint",
        (Edit(STATE, "        if timed_out:\n            self._failure(rec.endpoint, now)",
              "        if True:\n            self._failure(rec.endpoint, now)"),),
        core("test_mutant_gaps.py", "test_pool.py"),
    ),
    Mutant(
        "fifo-to-lifo",
        "a newcomer joins the head of the line instead of its tail",
        (Edit(STATE, "        else:\n            self.waiters.append(waiter)",
              "        else:\n            self.waiters.appendleft(waiter)"),),
        core("test_pool.py"),
    ),
    Mutant(
        "checkin-hands-to-the-newest",
        "a checkin hands the returned connection to the last checkout in line",
        (Edit(STATE, "            w = waiters.popleft()\n",
              "            w = waiters.pop()\n"),),
        core("test_handover.py", "test_pool.py"),
    ),
    Mutant(
        "hand-over-uncounted",
        "a connection handed over in line is not counted as a checkout",
        (Edit(STATE, "        self.checked_out(grant.record, now, now - w.since)\n",
              "        grant.record.lent_at = now\n"),),
        core("test_handover.py"),
    ),
    Mutant(
        "line-up-at-the-front",
        "a checkout that finds others in line goes to its head",
        (Edit(STATE, "        self._enqueue(waiter, front=False)\n"
                     "        if now < self._stuck_until",
              "        self._enqueue(waiter, front=True)\n"
                     "        if now < self._stuck_until"),),
        core("test_handover.py"),
    ),
    Mutant(
        "line-up-serves-nobody",
        "a checkout that joins the line does not serve what the line can be given",
        (Edit(STATE, "            return []\n        self._dispatch(now)\n"
                     "        return self._flush()",
              "            return []\n        return self._flush()"),),
        core("test_handover.py"),
    ),
    Mutant(
        "line-up-skip-outlives-the-route",
        "a newcomer skips the dispatch of a full line even after the route is due again",
        (Edit(STATE, "if now < self._stuck_until and not self._closing",
              "if self._stuck_until > -_INF and not self._closing"),),
        core("test_line_up_skip.py"),
    ),
    Mutant(
        "handover-forgets-the-wait",
        "a checkout counted records no wait (as a saturated pool's hand-over would)",
        (Edit(STATE, "pending.append(waited)", "pending.append(0.0)"),),
        core("test_line_up_skip.py", "test_handover.py"),
    ),
    Mutant(
        "cut-attempt-hides-the-cause",
        "an attempt cut off at the checkout's deadline replaces the error that says why "
        "the zones failed with its own timeout",
        (Edit(FLOW, "if last_error is not None and budget < cfg.connect_timeout and "
                    "ended >= deadline:", "if False:"),),
        core("test_slow_zones.py"),
    ),
    Mutant(
        "fast-steps-miss-a-nearer-deadline",
        "a fast checkin that brings the reaping deadline forward leaves the fast steps' "
        "own deadline where it was",
        (Edit(STATE, "                if due < self._fast_until:  # noqa: PLR1730\n"
                     "                    self._fast_until = due\n",
              "                pass\n"),),
        core("test_fast_steps.py"),
    ),
    Mutant(
        "fast-steps-while-watching-leaks",
        "the fast checkout runs with leak_threshold set (unstamped, unwatched)",
        (Edit(STATE, "                or cfg.leak_threshold is not None or self._watched):",
              "                or self._watched):"),),
        core("test_fast_steps.py"),
    ),
    Mutant(
        "interrupted-in-line-stays",
        "a checkout interrupted while waiting behind a line stays in it",
        (Edit("src/zonal_core/pool.py",
              "                    closing.extend(self._leave_plan(waiter))\n",
              "                    pass\n"),),
        core("test_handover.py"),
    ),
    Mutant(
        "flow-restarts-the-clock",
        "a checkout resumed after its wait in line gets its whole timeout again",
        (Edit(FLOW, "    if start is None:\n        start = clock.now()\n",
              "    start = clock.now()\n"),),
        core("test_handover.py"),
    ),
    Mutant(
        "newcomer-overtakes",
        "a new checkout takes what frees up before those already in line",
        (Edit(STATE, "            if self.waiters and not front:",
              "            if False:"),),
        core("test_mutant_gaps.py", "test_pool.py"),
    ),
    Mutant(
        "max-idle-never-reaps",
        "connections idle longer than max_idle are kept",
        (Edit(STATE, "                if now - rec.last_used > max_idle:\n"
                     "                    self._close(z, rec, \"idle\")",
              "                if False:\n"
                     "                    self._close(z, rec, \"idle\")"),),
        core("test_pool.py"),
    ),
    Mutant(
        "lifetime-jitter-later",
        "max_lifetime's jitter makes connections live up to 10% longer, not shorter",
        (Edit(STATE, "self.jitter.uniform(0.9, 1.0)", "self.jitter.uniform(1.0, 1.1)"),),
        core("test_pool.py"),
    ),
    Mutant(
        "config-error-is-zone-failure",
        "a misconfiguration (a bad option) counts as a zone failure, failing over",
        (Edit(FLOW, "    if is_config_error(exc):\n        return \"config\"",
              "    if is_config_error(exc):\n        return \"failure\""),),
        core("test_pool.py"),
    ),
    Mutant(
        "auth-failure-ejects",
        "a refused password counts against the endpoint's health",
        (Edit(STATE, "        if kind == \"failure\":\n            self._failure(",
              "        if kind in (\"failure\", \"auth\"):\n            self._failure("),),
        core("test_pool.py"),
    ),
    Mutant(
        "hedging-off",
        "a slow connect never starts a racer in the next zone",
        (Edit(FLOW, "racer = state.hedge_delay(slot.endpoint) > 0 and state.can_hedge(",
              "racer = False and state.can_hedge("),),
        core("test_slow_zones.py"),
    ),
    Mutant(
        "query-timeout-ignored",
        "psycopg statements are unbounded when only query_timeout is set",
        (Edit(DRIVER, "        setattr(bounds, self.slot, value)\n",
              "        setattr(bounds, self.slot, None if self.slot == \"_query_timeout\" "
              "else value)\n"),),
        QUERY_TIMEOUT_TESTS,
    ),
    Mutant(
        "ping-deadline-ignored",
        "with query_timeout off, a statement ignores a ping's deadline (pings unbounded)",
        (Edit(DRIVER, "        if self._deadline is not None or (",
              "        if False or ("),),
        ("tests/reliability/test_no_statement_retry.py::"
         "test_a_ping_is_bounded_without_a_query_timeout_and_statements_are_free_after",),
    ),
    Mutant(
        "django-query-timeout-uncounted",
        "a Django statement past query_timeout is not a failure of its endpoint",
        (Edit(DJANGO_BACKEND, "    driver.on_query_timeout = pool.record_failure\n",
              "    pass\n"),),
        ("tests/django/test_django_backend.py::"
         "test_a_statement_past_query_timeout_counts_against_its_endpoint",),
    ),
    Mutant(
        "session-attrs-unchecked",
        "verify_session_attrs (psycopg) accepts any server",
        (Edit(DRIVER, "    if wanted == \"any\":\n        return\n    with conn.cursor(",
              "    return\n    with conn.cursor("),),
        SESSION_ATTRS_TESTS,
    ),
    Mutant(
        "password-in-config-repr",
        "repr(ZonalConfig) shows password= in clear",
        (Edit(CONFIG, "            parts.append(\"password=***\")",
              "            parts.append(f\"password={self.password!r}\")"),),
        core("test_mutant_gaps.py", "test_config.py"),
    ),
    Mutant(
        "password-in-endpoint-display",
        "an endpoint shows as user:password@host:port",
        (Edit(TOPOLOGY, "(f\":{MASK}\" if self.password is not None else \"\")",
              "(f\":{self.password}\" if self.password is not None else \"\")"),),
        core("test_topology.py", "test_config.py"),
    ),
    Mutant(
        "redact-misses-percent-encoding",
        "a known secret is redacted, its percent-encoded form (in URLs) is not",
        (Edit(SECRETS, "            forms.add(quote(secret, safe=\"\"))",
              "            pass"),),
        core("test_secrets.py"),
    ),
)


# -- the scratch copy -----------------------------------------------------------------


def _sources() -> list[str]:
    """Files to copy: tracked or untracked-but-not-ignored, present in the tree."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *COPIED],
        cwd=ROOT, check=True, capture_output=True).stdout.decode()
    return sorted({p for p in out.split("\0") if p and (ROOT / p).is_file()})


def make_scratch(dest: Path) -> None:
    for rel in _sources():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def expand(tests: Sequence[str], scratch: Path) -> list[str]:
    """``tests/core`` becomes its files, minus those named before it, in order."""
    out: list[str] = []
    for arg in tests:
        if arg == CORE_DIR:
            named = set(out)
            out.extend(str(p.relative_to(scratch))
                       for p in sorted((scratch / CORE_DIR).glob("test_*.py"))
                       if str(p.relative_to(scratch)) not in named)
        else:
            out.append(arg)
    return out


class Stale(Exception):
    """A mutant's snippet is not found exactly once: the code moved on."""


def apply(scratch: Path, mutant: Mutant) -> dict[Path, bytes]:
    """Apply ``mutant``'s edits; returns the original bytes of every file touched."""
    saved: dict[Path, bytes] = {}
    texts: dict[Path, str] = {}
    for e in mutant.edits:
        path = scratch / e.path
        if path not in texts:
            saved[path] = path.read_bytes()
            texts[path] = saved[path].decode()
        n = texts[path].count(e.old)
        if n != 1:
            raise Stale(f"{mutant.name}: the snippet occurs {n} times in {e.path} "
                        f"(must be once): {e.old!r}")
        texts[path] = texts[path].replace(e.old, e.new)
    for path, text in texts.items():
        _drop_bytecode(path)
        path.write_text(text)
    return saved


def restore(saved: dict[Path, bytes]) -> None:
    for path, data in saved.items():
        path.write_bytes(data)
        _drop_bytecode(path)


def _drop_bytecode(path: Path) -> None:
    # A mutant may keep the file's size (0.9 -> 1.0): never trust a cached .pyc.
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


def module_of(rel: str) -> str:
    return rel.removeprefix("src/").removesuffix(".py").replace("/", ".")


# -- running pytest -----------------------------------------------------------------------


def environ(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(scratch / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.setdefault("ZONAL_LAB_REQUIRE", "1")  # a missing lab fails the baseline, never skips
    return env


def probe(scratch: Path, env: dict[str, str], modules: Iterable[str]) -> str | None:
    """None when every module is imported from the scratch copy, else why not."""
    mods = sorted({"zonal_core", "zonal_lab.pytest_plugin", *modules})
    code = ("import importlib, sys\n"
            "for m in sys.argv[1:]: print(importlib.import_module(m).__file__)")
    p = subprocess.run([sys.executable, "-c", code, *mods], cwd=scratch, env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    if p.returncode != 0:
        return f"import probe failed: {p.stderr.strip().splitlines()[-1:]}"
    src = (scratch / "src").resolve()
    for mod, file in zip(mods, p.stdout.split(), strict=True):
        if not Path(file).resolve().is_relative_to(src):
            return f"{mod} is imported from {file}, not from the scratch copy {src}"
    return None


@dataclass
class Run:
    status: int | None  # None: timed out
    seconds: float
    output: str

    @property
    def first_failure(self) -> str:
        m = re.search(r"^(?:FAILED|ERROR) (\S+)", self.output, re.MULTILINE)
        if m:
            return m.group(0).split(" ", 1)[0] + " " + m.group(1)
        return ""

    @property
    def summary(self) -> str:
        lines = [ln.strip("= ") for ln in self.output.splitlines() if ln.strip()]
        return lines[-1] if lines else "(no output)"


def pytest(scratch: Path, env: dict[str, str], args: Sequence[str], timeout: float) -> Run:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", *args]
    t0 = time.monotonic()
    with subprocess.Popen(cmd, cwd=scratch, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as p:
        try:
            out, _ = p.communicate(timeout=timeout)
            status: int | None = p.returncode
        except subprocess.TimeoutExpired:
            _stop(p)
            out, _ = p.communicate()
            status = None
    return Run(status, time.monotonic() - t0, out)


def _stop(p: subprocess.Popen[str]) -> None:
    """Stop pytest and what it started (its own process group), TERM then KILL."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


# -- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/mutants",
        description="Apply deliberate bugs one at a time to a scratch copy; each must "
                    "make a test fail. Exit 0: all killed; 1: a mutant survived; 2: error.")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", action="append", metavar="NAME", default=[],
                    help="run only this mutant (repeatable)")
    ap.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS",
                    help="per pytest run (default 180)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the selections on the unmutated copy first")
    ap.add_argument("--keep", action="store_true",
                    help="keep the scratch copy (its path is printed)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the end of each mutant's pytest output (why it was killed)")
    opts = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    if opts.list:
        width = max(map(len, names))
        for m in MUTANTS:
            files = ", ".join(sorted({e.path.removeprefix("src/") for e in m.edits}))
            print(f"{m.name:<{width}}  {m.what}  [{files}]")
        return 0
    unknown = [n for n in opts.only if n not in names]
    if unknown:
        ap.error(f"unknown mutant(s) {', '.join(unknown)}; see --list")
    chosen = [m for m in MUTANTS if not opts.only or m.name in opts.only]

    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="zonal-mutants-"))
    try:
        return _run(scratch, chosen, opts, started)
    finally:
        if opts.keep:
            print(f"scratch copy kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(scratch: Path, chosen: list[Mutant], opts: argparse.Namespace,
         started: float) -> int:
    make_scratch(scratch)
    env = environ(scratch)
    print(f"scratch copy: {scratch}", flush=True)

    # Stale snippets are found before anything runs.
    for m in chosen:
        try:
            restore(apply(scratch, m))
        except Stale as exc:
            print(f"error: stale mutant: {exc}", file=sys.stderr)
            return 2

    why = probe(scratch, env, {module_of(e.path) for m in chosen for e in m.edits})
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2

    if not opts.no_baseline:
        selections = list(dict.fromkeys(tuple(expand(m.tests, scratch)) for m in chosen))
        # one run for all core selections (they differ only in order), one per other
        merged: list[list[str]] = []
        core_files = sorted({a for s in selections for a in s if a.startswith(CORE_DIR)})
        if core_files:
            merged.append(core_files)
        others = list(dict.fromkeys(a for s in selections for a in s
                                    if not a.startswith(CORE_DIR)))
        if others:
            merged.append(others)
        for sel in merged:
            run = pytest(scratch, env, sel, opts.timeout)
            label = "tests/core" if sel is core_files else " ".join(sel)
            print(f"baseline {label}: {run.summary} ({run.seconds:.0f} s)", flush=True)
            if run.status != 0:
                print(run.output[-4000:], file=sys.stderr)
                print("error: the unmutated code fails its selection: fix that first",
                      file=sys.stderr)
                return 2

    results: list[tuple[Mutant, str, str, float]] = []
    for m in chosen:
        saved = apply(scratch, m)
        try:
            why = probe(scratch, env, {module_of(e.path) for e in m.edits})
            if why:
                results.append((m, "error", why, 0.0))
                print(f"{m.name}: error: {why}", flush=True)
                continue
            run = pytest(scratch, env, expand(m.tests, scratch), opts.timeout)
        finally:
            restore(saved)
        if run.status == 1:
            outcome, detail = "killed", run.first_failure or run.summary
        elif run.status == 0:
            outcome, detail = "survived", run.summary
        elif run.status is None:
            outcome, detail = "error", f"timed out after {opts.timeout:g} s"
        else:
            outcome, detail = "error", f"pytest exit status {run.status}: {run.summary}"
        results.append((m, outcome, detail, run.seconds))
        print(f"{m.name}: {outcome} ({run.seconds:.0f} s) {detail}", flush=True)
        if outcome == "error":
            print(run.output[-3000:], file=sys.stderr)
        elif opts.verbose:
            print(textwrap.indent(run.output[-3000:], "    | "), flush=True)

    width = max(len(m.name) for m in chosen)
    print()
    print(f"{'mutant':<{width}}  {'outcome':<8}  {'time':>5}  detail")
    for m, outcome, detail, secs in results:
        print(f"{m.name:<{width}}  {outcome:<8}  {secs:4.0f}s  {detail}")
    survivors = [m.name for m, outcome, _, _ in results if outcome == "survived"]
    errors = [m.name for m, outcome, _, _ in results if outcome == "error"]
    killed = sum(1 for _, outcome, _, _ in results if outcome == "killed")
    print(f"\n{killed} killed, {len(survivors)} survived, {len(errors)} errors "
          f"of {len(results)} mutants in {time.monotonic() - started:.0f} s")
    if survivors:
        print("survivors (a test gap each): " + ", ".join(survivors))
    if errors:
        print("errors: " + ", ".join(errors))
        return 2
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
