"""scripts/django_suite.py's reading of ``runtests.py -v 2`` and its comparison, on
canned output: nothing passes by accident (no database, no Django run)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "django_suite.py"
SEP1, SEP2 = "=" * 70, "-" * 70


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("django_suite_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ds = _load()

E002 = ("django.core.exceptions.ImproperlyConfigured: DATABASES['default_pool']['OPTIONS']"
        "['pool'] turns on Django's own connection pool, but zonal_django is the pool (fix: "
        "remove OPTIONS['pool']; size the pool with OPTIONS['zonal'] (pool_size, max_total, "
        "timeout))")
E003 = ("django.core.exceptions.ImproperlyConfigured: DATABASES['default']['CONN_MAX_AGE'] is "
        "None: persistent connections bypass the pool (each thread would keep its own "
        "connection) (fix: CONN_MAX_AGE = 0; the pool keeps connections open (max_idle, "
        "max_lifetime))")
POOL = "backends.postgresql.tests.Tests"
HEALTH = "backends.base.test_base.ConnectionHealthChecksTests"


def detail(flavour: str, desc: str, error: str) -> str:
    return (f"{SEP1}\n{flavour}: {desc}\n{SEP2}\nTraceback (most recent call last):\n"
            f'  File "tests.py", line 1, in test\n    something()\n{error}\n\n')


def output(lines: list[str], details: list[str], ran: int, summary: str) -> str:
    """runtests.py's output as it prints it: database lines, result lines, details."""
    head = ("Creating test database for alias 'default'...\nFound 9 test(s).\n"
            "System check identified no issues (0 silenced).\n")
    return (head + "".join(line + "\n" for line in lines) + "\n" + "".join(details)
            + f"{SEP2}\nRan {ran} tests in 1.234s\n\n{summary}\n"
            "Destroying test database for alias 'default'...\n")


STOCK_LINES = [
    "test_a (app.tests.A.test_a) ... ok",
    "test_doc (app.tests.A.test_doc)\nThe first line of a docstring ... is read ... ok",
    "test_skip (app.tests.A.test_skip) ... skipped 'Database has feature(s) x'",
    "test_xfail (app.tests.A.test_xfail) ... expected failure",
    f"test_connect_pool ({POOL}.test_connect_pool) ... ok",
]


def stock_text() -> str:
    return output(STOCK_LINES, [], 5, "OK (skipped=1, expected failures=1)")


def zonal_text(extra_lines: list[str] | None = None, extra_details: list[str] | None = None,
               ran: int = 5,
               summary: str = "FAILED (errors=1, skipped=1, expected failures=1)") -> str:
    """The stock run but test_connect_pool, refused by zonal (zonal.E002)."""
    lines = [*STOCK_LINES[:-1], f"test_connect_pool ({POOL}.test_connect_pool) ... ERROR",
             *(extra_lines or [])]
    details = [detail("ERROR", f"test_connect_pool ({POOL}.test_connect_pool)", E002),
               *(extra_details or [])]
    return output(lines, details, ran, summary)


# -- reading -------------------------------------------------------------------------

def test_a_clean_run_is_read_test_by_test() -> None:
    r = ds.parse_output(stock_text(), 0, "stock")
    assert r.ran == 5
    assert {k: o.outcome for k, o in r.outcomes.items()} == {
        "app.tests.A.test_a": "ok", "app.tests.A.test_doc": "ok",
        "app.tests.A.test_skip": "skipped", "app.tests.A.test_xfail": "expected failure",
        f"{POOL}.test_connect_pool": "ok"}
    assert r.outcomes["app.tests.A.test_skip"].text == "Database has feature(s) x"


def test_a_failure_gets_its_traceback_as_text() -> None:
    r = ds.parse_output(zonal_text(), 1, "zonal")
    o = r.outcomes[f"{POOL}.test_connect_pool"]
    assert o.outcome == "ERROR"
    assert "turns on Django's own connection pool" in o.text
    assert "Traceback" in o.text


def test_a_failing_subtest_fails_its_test() -> None:
    text = zonal_text(
        extra_lines=["test_sub (app.tests.B.test_sub) ... ",
                     "  test_sub (app.tests.B.test_sub) (n=1) ... FAIL",
                     "  test_sub (app.tests.B.test_sub) [msg] (n=2, s='a b') ... FAIL"],
        extra_details=[detail("FAIL", "test_sub (app.tests.B.test_sub) (n=1)",
                              "AssertionError: 1 != 2"),
                       detail("FAIL", "test_sub (app.tests.B.test_sub) [msg] (n=2, s='a b')",
                              "AssertionError: 3 != 4")],
        ran=6, summary="FAILED (failures=2, errors=1, skipped=1, expected failures=1)")
    r = ds.parse_output(text, 1, "zonal")
    o = r.outcomes["app.tests.B.test_sub"]
    assert o.outcome == "FAIL"
    assert "1 != 2" in o.text and "3 != 4" in o.text
    assert len(r.outcomes) == 6


def test_a_class_fixture_error_is_its_own_id_and_not_a_test() -> None:
    text = zonal_text(
        extra_lines=["setUpClass (app.tests.C) ... ERROR"],
        extra_details=[detail("ERROR", "setUpClass (app.tests.C)",
                              "psycopg.OperationalError: connection refused")],
        ran=5, summary="FAILED (errors=2, skipped=1, expected failures=1)")
    r = ds.parse_output(text, 1, "zonal")
    o = r.outcomes["app.tests.C.setUpClass"]
    assert o.outcome == "ERROR" and "connection refused" in o.text
    assert r.ran == 5  # the fixture is not one of the tests Ran counts


def test_a_test_reported_twice_keeps_the_worse_outcome() -> None:
    """Django's parallel runner reports a later class's setUpClass error against the
    test that ran before it in the same worker."""
    text = zonal_text(
        extra_lines=["test_a (app.tests.A.test_a) ... ERROR"],
        extra_details=[detail("ERROR", "test_a (app.tests.A.test_a)", "RuntimeError: x")],
        summary="FAILED (errors=2, skipped=1, expected failures=1)")
    r = ds.parse_output(text, 1, "zonal")
    assert r.outcomes["app.tests.A.test_a"].outcome == "ERROR"


@pytest.mark.parametrize(("text", "exit_code", "why"), [
    # a test line lost: 4 tests read, "Ran 5"
    (output(STOCK_LINES[1:], [], 5, "OK (skipped=1, expected failures=1)"), 0,
     "4 tests read, but 'Ran 5'"),
    # a skip the summary does not count
    (output(STOCK_LINES, [], 5, "OK (expected failures=1)"), 0, "1 'skipped' lines"),
    # OK, but a test failed
    (output([*STOCK_LINES[:-1], f"test_connect_pool ({POOL}.test_connect_pool) ... FAIL"],
            [detail("FAIL", f"test_connect_pool ({POOL}.test_connect_pool)", "x")], 5,
            "OK (skipped=1, expected failures=1)"), 0, "1 'FAIL' lines"),
    # FAILED, and exit status 0
    (zonal_text(), 0, "exit status 0 with 'FAILED"),
    # OK, and exit status 1
    (stock_text(), 1, "exit status 1 with 'OK"),
    # an ERROR line without its traceback
    (output([*STOCK_LINES[:-1], f"test_connect_pool ({POOL}.test_connect_pool) ... ERROR"],
            [], 5, "FAILED (errors=1, skipped=1, expected failures=1)"), 1,
     "0 ERROR tracebacks"),
    # a subtest's parent line and nothing after it
    (output([*STOCK_LINES, "test_sub (app.tests.B.test_sub) ... "], [], 6,
            "OK (skipped=1, expected failures=1)"), 0, "no outcome read for 1 test"),
    # a result format this script does not know: nothing read
    (output([line.replace(" ... ", " -> ") for line in STOCK_LINES], [], 5,
            "OK (skipped=1, expected failures=1)"), 0, "0 tests read, but 'Ran 5'"),
    # no summary at all (a crash)
    ("Traceback (most recent call last):\nImportError: x\n", 1, "no 'Ran N tests'"),
    # an unknown count in the summary
    (output(STOCK_LINES, [], 5, "OK (skipped=1, expected failures=1, flaky=2)"), 0,
     "unknown count 'flaky=2'"),
])
def test_output_that_does_not_add_up_could_not_run(text: str, exit_code: int,
                                                    why: str) -> None:
    with pytest.raises(ds.CouldNotRun, match="^run: .*" + re.escape(why)):
        ds.parse_output(text, exit_code, "run")


# -- comparison ----------------------------------------------------------------------

def _compare(zonal: str, stock: str | None = None) -> tuple[int, int]:
    s = ds.parse_output(stock or stock_text(), 0, "stock")
    z = ds.parse_output(zonal, 1 if "FAILED" in zonal else 0, "zonal")
    return ds.compare(s.outcomes, z.outcomes)  # type: ignore[no-any-return]


def test_a_listed_difference_with_its_error_is_explained(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _compare(zonal_text()) == (1, 0)
    out = capsys.readouterr().out
    assert f"{POOL}.test_connect_pool: stock=ok zonal=ERROR" in out
    assert "zonal.E002" in out
    # the listed ids that are in neither canned run are notes, not failures
    assert f"note: {POOL}.test_pooling_health_checks (in EXPECTED) is not in" in out


def test_a_listed_difference_with_another_error_is_not() -> None:
    text = zonal_text().replace(E002, "psycopg.OperationalError: connection refused")
    assert _compare(text) == (0, 1)


def test_a_listed_difference_with_another_outcome_is_not() -> None:
    text = (zonal_text().replace("test_connect_pool) ... ERROR", "test_connect_pool) ... FAIL")
            .replace("ERROR: test_connect_pool", "FAIL: test_connect_pool")
            .replace("FAILED (errors=1", "FAILED (failures=1"))
    assert _compare(text) == (0, 1)


@pytest.mark.parametrize("invented", [
    f"{HEALTH}.test_anything_new",  # once explained by its class
    f"{POOL}.test_pool_regression",  # once explained by a pattern
])
def test_an_invented_difference_is_unexplained_whatever_its_error(invented: str) -> None:
    name = invented.rpartition(".")[2]
    line = f"{name} ({invented}) ... "
    stock = output([*STOCK_LINES, line + "ok"], [], 6, "OK (skipped=1, expected failures=1)")
    zonal = zonal_text(extra_lines=[line + "ERROR"],
                       extra_details=[detail("ERROR", f"{name} ({invented})", E003)], ran=6,
                       summary="FAILED (errors=2, skipped=1, expected failures=1)")
    assert _compare(zonal, stock) == (1, 1)


def test_stock_pass_and_zonal_skip_is_a_difference() -> None:
    zonal = zonal_text(extra_lines=["test_b (app.tests.A.test_b) ... skipped 'no zones'"],
                       ran=6, summary="FAILED (errors=1, skipped=2, expected failures=1)")
    stock = output([*STOCK_LINES, "test_b (app.tests.A.test_b) ... ok"], [], 6,
                   "OK (skipped=1, expected failures=1)")
    assert _compare(zonal, stock) == (1, 1)


def test_a_test_missing_from_the_zonal_run_is_a_difference() -> None:
    stock = output([*STOCK_LINES, "test_b (app.tests.A.test_b) ... ok"], [], 6,
                   "OK (skipped=1, expected failures=1)")
    assert _compare(zonal_text(), stock) == (1, 1)


def test_a_listed_test_that_no_longer_differs_fails_the_comparison() -> None:
    assert _compare(stock_text()) == (0, 1)


def test_only_zonal_passes_with_listed_failures_only(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert ds.check_alone("zonal", ds.parse_output(zonal_text(), 1, "zonal")) == 0
    text = zonal_text(
        extra_lines=["test_b (app.tests.A.test_b) ... FAIL"],
        extra_details=[detail("FAIL", "test_b (app.tests.A.test_b)", "AssertionError")],
        ran=6, summary="FAILED (failures=1, errors=1, skipped=1, expected failures=1)")
    assert ds.check_alone("zonal", ds.parse_output(text, 1, "zonal")) == 1
    # on the stock side nothing is listed: every failure counts
    assert ds.check_alone("stock", ds.parse_output(zonal_text(), 1, "stock")) == 1
    assert "UNEXPLAINED" in capsys.readouterr().out


def test_every_expected_entry_is_exact() -> None:
    """One entry per id (no patterns), a known outcome, an expected error naming
    zonal's refusal, and a reason."""
    for key, (outcome, pattern, reason) in ds.EXPECTED.items():
        assert re.fullmatch(r"[\w.]+", key), key
        assert outcome in ("FAIL", "ERROR"), key
        assert "zonal_django is the pool" in pattern or "CONN_MAX_AGE" in pattern, key
        assert reason and ("zonal.E002" in reason or "zonal.E003" in reason), key


# What Python 3.11's unittest prints for subtests of a test with a docstring, a
# failing setUpClass and a skipping one (``python -m unittest -v``).
REAL = f"""\
test_ok (t_fmt.A.test_ok) ... ok
test_sub (t_fmt.A.test_sub)
Doc line ... with dots. ... \n  test_sub (t_fmt.A.test_sub) (n=1)
Doc line ... with dots. ... FAIL
  test_sub (t_fmt.A.test_sub) (n=2)
Doc line ... with dots. ... FAIL
setUpClass (t_fmt.C) ... ERROR
setUpClass (t_fmt.D) ... skipped 'no'

{SEP1}
ERROR: setUpClass (t_fmt.C)
{SEP2}
Traceback (most recent call last):
  File "/tmp/t_fmt.py", line 13, in setUpClass
    raise RuntimeError("boom")
RuntimeError: boom

{SEP1}
FAIL: test_sub (t_fmt.A.test_sub) (n=1)
Doc line ... with dots.
{SEP2}
Traceback (most recent call last):
  File "/tmp/t_fmt.py", line 7, in test_sub
    self.assertLess(n, 1)
AssertionError: 1 not less than 1

{SEP1}
FAIL: test_sub (t_fmt.A.test_sub) (n=2)
Doc line ... with dots.
{SEP2}
Traceback (most recent call last):
  File "/tmp/t_fmt.py", line 7, in test_sub
    self.assertLess(n, 1)
AssertionError: 2 not less than 1

{SEP2}
Ran 2 tests in 0.000s

FAILED (failures=2, errors=1, skipped=1)
"""


def test_unittests_own_output_is_read() -> None:
    r = ds.parse_output(REAL, 1, "real")
    assert {k: o.outcome for k, o in r.outcomes.items()} == {
        "t_fmt.A.test_ok": "ok", "t_fmt.A.test_sub": "FAIL",
        "t_fmt.C.setUpClass": "ERROR", "t_fmt.D.setUpClass": "skipped"}
    assert "2 not less than 1" in r.outcomes["t_fmt.A.test_sub"].text
    assert "RuntimeError: boom" in r.outcomes["t_fmt.C.setUpClass"].text
