"""``zonal bench`` end to end, as a user runs it: a real process, its own lab, files.

No figure is asserted (speed depends on the machine); what must hold is that the
run finishes, every requested subject is accounted for in every scenario, and the
table and the plots are written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zonal_lab import bench
from zonal_lab.bench import report, scenarios, subjects, workload
from zonal_lab.binaries import find_pgbouncer
from zonal_lab.pytest_plugin import LabFactory, require_module

BENCH = [sys.executable, "-m", "zonal_lab.bench"]  # what `zonal bench` runs
OVERHEAD_ONLY = ("zonal_core", "zonal_core_aa")  # the core container, timed twice (A/A)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_quick_bench_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    require_module("matplotlib")
    against = ["queuepool", "nullpool", "psycopg_pool", "django_pool"]
    proc = subprocess.run(
        [*BENCH, "--quick", "--scenarios", "overhead,affinity", "--against", ",".join(against),
         "--out", str(tmp_path)],
        cwd=tmp_path,  # not the checkout: the bench is a package of zonal_lab
        capture_output=True, text=True, timeout=80, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # progress went to stderr, a line per step
    assert "== [1/2] overhead" in proc.stderr and "== [2/2] affinity" in proc.stderr
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = json.loads((folder / "results.json").read_text())

    subjects = ["zonal", *against]
    assert results["meta"]["subjects"] == subjects
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    assert set(results["scenarios"]) == {"overhead", "affinity"}
    for name, scenario in results["scenarios"].items():
        assert "error" not in scenario, scenario.get("traceback")
        seen = {row["subject"] for row in scenario["rows"]}
        # every requested subject, and beside them only what the scenario names itself
        assert set(subjects) <= seen <= {*subjects, *OVERHEAD_ONLY}, (name, seen)
        for row in scenario["rows"]:
            assert "skipped" in row or "label" in row
    overhead = results["scenarios"]["overhead"]
    assert {r["threads"] for r in overhead["rows"] if "ratio" in r} == {1, 4}
    # each label says what it times; ZonalPool is timed through SQLAlchemy's pool API
    timed = {r["subject"]: r["label"] for r in overhead["rows"] if "ratio" in r}
    assert timed == {"zonal_core": "zonal core (CorePool.getconn/putconn)",
                     "zonal_core_aa": "zonal core again (A/A)",
                     "zonal": "ZonalPool (SQLAlchemy pool.connect/close)",
                     "queuepool": "QueuePool (SQLAlchemy pool.connect/close)"}
    for r in overhead["rows"]:
        if "ratio" in r:
            assert len(r["rounds"]) >= 5 and r["spread"]
        if r["subject"] in ("zonal", "zonal_core") and "ratio" in r:
            assert "A/A spread" in r["verdict"], r["verdict"]
    affinity = results["scenarios"]["affinity"]
    zonal_row = next(r for r in affinity["rows"] if r["subject"] == "zonal")
    assert zonal_row["local"] is not None and zonal_row["errors"] == 0
    if find_pgbouncer() is not None:
        assert any(r["subject"] == "nullpool" and "p50" in r for r in affinity["rows"])

    md = (folder / "results.md").read_text()
    assert "## The ratios that matter" in md and "| subject |" in md
    assert results["machine"]["cpu"] in md
    for png in ("overhead.png", "affinity.png"):
        assert (folder / png).stat().st_size > 1000
        assert f"({png})" in md
    # the lab's password never lands in the results
    assert "password" not in json.dumps(results["scenarios"]).lower()


def test_unknown_subject_or_scenario_is_a_usage_error(tmp_path: Path) -> None:
    for args in (["--against", "queuepool,pgcat"], ["--scenarios", "overhead,warp"]):
        proc = subprocess.run(
            [*BENCH, *args, "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert proc.returncode == 2
        assert "choose from" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_the_options_take_their_names_from_the_registries() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args([])
    assert args.against == [n for n, s in subjects.SUBJECTS.items()
                            if n != "zonal" and s.against]
    assert args.against == list(subjects.DEFAULT_AGAINST)
    assert args.scenarios == list(scenarios.SCENARIOS)
    text = parser.format_help()
    for name in (*subjects.SUBJECTS, *scenarios.SCENARIOS):
        assert f"  {name} " in text, name  # listed, with its one-line help
    assert subjects.NAMES[0] == "zonal"
    assert all(s.name == k for k, s in subjects.SUBJECTS.items())
    assert all(s.name == k for k, s in scenarios.SCENARIOS.items())


def test_a_peer_that_is_not_installed_is_named_and_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """psycopg_pool and Django hidden (as in a bare ``pip install zonal[lab]``): the
    run goes on, says which and how to install them, and gives each a skipped row."""
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)  # import fails, find_spec: None
    monkeypatch.setitem(sys.modules, "django", None)
    assert subjects.missing("psycopg_pool") == (
        "psycopg-pool is not installed (pip install 'zonal[bench]')")
    assert subjects.missing("django_pool") == (
        "Django is not installed (pip install 'django>=5.1')")
    assert subjects.missing("queuepool") is None
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--scenarios", "overhead", "--no-plots",
                              "--against", "queuepool,psycopg_pool,django_pool",
                              "--out", str(tmp_path)])
    assert bench.run(args) == 0
    err = capsys.readouterr().err
    assert "skipped: psycopg_pool (psycopg_pool): psycopg-pool is not installed " \
           "(pip install 'zonal[bench]')" in err
    assert "skipped: django_pool (Django native pool): Django is not installed" in err
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = json.loads((folder / "results.json").read_text())
    assert results["meta"]["not_installed"].keys() == {"psycopg_pool", "django_pool"}
    rows = {r["subject"]: r for r in results["scenarios"]["overhead"]["rows"]}
    assert rows.keys() == {"zonal", "queuepool", "psycopg_pool", "django_pool", *OVERHEAD_ONLY}
    assert "not installed" in rows["django_pool"]["skipped"]
    assert "us" in rows["zonal"] and "us" in rows["queuepool"]
    md = (folder / "results.md").read_text()
    assert "- Django native pool: not measured — Django is not installed" in md


def test_a_scenario_whose_library_is_missing_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert scenarios.SCENARIOS["memory"].missing() == (
        "psutil is not installed (pip install 'zonal[bench]')")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--scenarios", "memory", "--no-plots", "--against",
                              "queuepool", "--out", str(tmp_path)])
    assert bench.run(args) == 0  # and no lab started: nothing it would serve can run
    err = capsys.readouterr().err
    assert "skipped: memory: psutil is not installed (pip install 'zonal[bench]')" in err
    assert "starting the lab" not in err
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    memory = json.loads((folder / "results.json").read_text())["scenarios"]["memory"]
    assert {r["subject"] for r in memory["rows"]} == {"zonal", "queuepool"}
    assert all("psutil is not installed" in r["skipped"] for r in memory["rows"])


def test_the_subjects_are_named_for_what_they_measure() -> None:
    assert subjects.label("zonal") == "ZonalPool (SQLAlchemy)"
    assert subjects.label("zonal_django") == "zonal_django (Django backend)"
    assert subjects.label("zonal_core") == "zonal core + psycopg (CorePool.connection)"
    assert "ceiling" in subjects.label("raw_psycopg")
    # measured by request_shapes only: not choices of --against
    only = {"zonal_django", "zonal_core", "psycopg_pool_autocommit", "raw_psycopg"}
    assert {n for n, s in subjects.SUBJECTS.items() if not s.against} == only
    assert not only & set(subjects.NAMES)


def test_a_verdict_is_judged_against_the_aa_spread() -> None:
    judge = scenarios._judge
    aa = [1.0, 0.88, 1.05, 0.97, 1.02]  # the A/A spread: 12%
    mixed = [0.85, 0.95, 1.02, 0.9, 0.8]
    assert judge(0.9, mixed, aa, higher_is_better=True, peer="P") == (
        "no difference from P shown: rounds 0.80..1.02x against an A/A spread of ±12%")
    assert judge(0.8, mixed, aa, higher_is_better=True, peer="P") == (
        "20% WORSE than P (rounds 0.80..1.02x), beyond the A/A spread (±12%)")
    assert judge(0.8, mixed, aa, higher_is_better=False, peer="P").startswith("20% better")
    # inside the spread, yet every one of 5 rounds on the same side: shown (sign test)
    low = [0.9, 0.93, 0.95, 0.91, 0.94]
    assert judge(0.93, low, aa, higher_is_better=True, peer="P") == (
        "WORSE than P in all 5 rounds (rounds 0.90..0.95x; sign test p = 0.06), a gap "
        "inside the A/A spread (±12%)")
    assert judge(0.93, low, aa, higher_is_better=False, peer="P").startswith("better than P")
    # 4 rounds are too few for the sign test
    assert judge(0.93, low[:4], aa, higher_is_better=True, peer="P").startswith("no difference")
    assert "noise unknown" in judge(0.93, low, [], higher_is_better=True, peer="P")
    assert scenarios._aa_noise([1.0, 0.9, 1.1]) == pytest.approx(0.1)
    assert scenarios._aa_noise([]) is None
    assert scenarios._per_round([2, 3, 4], [1, 0, 2]) == [2.0, 2.0]


def test_a_missed_target_says_by_how_much_and_why() -> None:
    t = scenarios._target
    assert t(1.02, 1.0, higher_is_better=True, why="W") == "target >= 1x met"
    assert t(0.9, 1.0, higher_is_better=True, why="W") == "target >= 1x MISSED by 10%: W"
    assert t(1.1, 1.0, higher_is_better=False, why="W") == "target <= 1x MISSED by 10%: W"
    assert t(0.9, 0.95, higher_is_better=True, why="W").startswith("target >= 0.95x MISSED by 5%")
    assert t(0.946, 0.95, higher_is_better=True, why="W").startswith(
        "target >= 0.95x MISSED by 0.4%")
    assert set(scenarios.MISSED_BECAUSE) == {
        "overhead", "throughput", "throughput_saturated", "request_shapes",
        "request_shapes_saturated", "core", "core_saturated", "preping"}


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("django_db_open")
def test_request_shapes_measures_pairs_an_aa_pair_and_the_ceiling(
        zonal_lab: LabFactory) -> None:
    """The scenario with tiny durations: every subject built once, 5 interleaved
    rounds each, efficiency against the ceiling, pair verdicts against the A/A spread."""
    lab = zonal_lab(zones=["a"], server_settings={"max_connections": 200})
    lines: list[str] = []
    ctx = scenarios.Context(lab=lab, subjects=["zonal", "queuepool", "django_pool"],
                            quick=True, progress=lines.append,
                            extras={"seconds": 0.2, "rounds": 5, "threads": (4,)})
    res = scenarios.SCENARIOS["request_shapes"].run(ctx)
    rows = {r["subject"]: r for r in res["rows"]}
    measured = {k for k, r in rows.items() if "skipped" not in r}
    assert {"zonal_core", "zonal_core_aa", "psycopg_pool_autocommit", "raw_psycopg"} <= measured
    django_missing = subjects.missing("zonal_django") or subjects.missing("django_pool")
    if django_missing is None:
        assert {"zonal_django", "django_pool"} <= measured
        assert "Django native pool" in rows["zonal_django"]["verdict"]
    else:  # skipped, with the named reason
        assert django_missing in rows["django_pool"]["skipped"]
    for name in measured:
        r = rows[name]
        assert len(r["rounds"]) == 5 and r["errors"] == 0, r
        assert r["rps"] > 0 and r["eff"] is not None and r["spread"]
    assert rows["raw_psycopg"]["eff"] == 100.0
    assert rows["zonal_core_aa"]["verdict"].startswith("A/A")
    assert "A/A spread" in rows["zonal_core"]["verdict"]
    assert "skipped" in rows["zonal"] and "skipped" in rows["queuepool"]
    assert sum("round 5/5" in line for line in lines) == 1  # one thread count
    md = report.render_markdown({"scenarios": {"request_shapes": res}})
    assert "% of ceiling" in md and "raw psycopg" in md


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("django_db_open")
def test_breakdown_measures_cpu_per_request_and_each_pools_parts() -> None:
    from zonal_lab.bench import breakdown

    res = breakdown.measure(requests=40, rounds=2)
    assert set(res["cpu_us"]) | set(res["skipped"]) == set(breakdown.CPU_SUBJECTS)
    assert {"zonal_core", "raw_psycopg"} <= set(res["cpu_us"])
    for r in res["cpu_us"].values():
        assert len(r["rounds"]) == 2 and all(0 < x < 1e6 for x in r["rounds"])
    if "django_pool" in res["cpu_us"]:
        assert {"zonal_django: connect() + close()", "django_pool: connect() + close()",
                "zonal_django: pool lookup",
                "zonal_django: a new thread's wrapper: connect() + close()",
                "django_pool: a new thread's wrapper: connect() + close()"
                } <= set(res["django_us"])
    assert set(res["pool_us"]) == {"ZonalPool: _do_get + _do_return_conn",
                                   "ZonalPool: pool.connect().close()",
                                   "QueuePool: _do_get + _do_return_conn",
                                   "QueuePool: pool.connect().close()"}
    assert all(v > 0 for v in res["pool_us"].values())
    for r in [*res["cpu_us"].values(), *res["reuse_us"].values()]:
        # (the kernel splits a thread's CPU time into user and system by clock ticks:
        # a 40-request round may show either as 0, never their sum)
        assert r["user"] >= 0 and r["sys"] >= 0 and r["median"] > 0 and r["wall"] > 0
    assert {"raw psycopg, the same connection every request",
            "raw psycopg, 4 connections in turn"} <= set(res["reuse_us"])
    # Section 5: each pair's bytecodes per request, split by package; zonal's own
    # packages count only on its side, the peer's pool package only on the other
    pairs = {(p["ours"], p["peer"]): p for p in res["steps"]}
    sa = pairs[("ZonalPool (SQLAlchemy)", "SQLAlchemy QueuePool")]
    assert sa["requests"] == breakdown.STEP_REQUESTS
    assert sa["total"][0] > 0 and sa["total"][1] > 0
    assert sa["total"][0] == pytest.approx(sum(x for x, _ in sa["parts"].values()))
    assert sa["parts"]["zonal_core"][0] > 0 and sa["parts"]["zonal_core"][1] == 0
    assert sa["parts"]["sqlalchemy"][0] > 0 and sa["parts"]["sqlalchemy"][1] > 0
    assert "sqlalchemy: Queue.get" in sa["differ"] or "sqlalchemy: Queue.put" in sa["differ"]
    if "django_pool" in res["cpu_us"]:
        dj = pairs[("zonal_django (Django backend)", "Django native pool")]
        assert dj["parts"]["zonal_django"][0] > 0
        assert dj["parts"]["psycopg_pool"][0] == 0 < dj["parts"]["psycopg_pool"][1]
    text = breakdown.render(res)
    assert text.startswith("1. CPU µs per request") and "ZonalPool (SQLAlchemy)" in text
    assert "4. The same connection again, or another" in text
    assert "5. Python bytecodes per request" in text
    assert "ZonalPool (SQLAlchemy) vs SQLAlchemy QueuePool: " in text


def test_fairness_judges_the_time_waited_and_names_what_the_request_p99_leaves_out(
) -> None:
    f = scenarios._fairness
    assert f({}, {}, saturated=True) == "p99 wait not measured"
    # FIFO: every request waits about 10 ms; the barging peer: most wait nothing, 10
    # requests in 2,000 (0.5%) wait 1.5 s, the whole measure
    fifo = [8.0 + (i % 5) for i in range(2000)]
    barging = [0.01] * 1990 + [1500.0] * 10
    tails = {"zonal": [11.0, 12.0, 11.5, 11.8, 12.2], "queuepool": [1500.0] * 5,
             "zonal_aa": [11.2, 12.1, 11.4, 11.9, 12.0]}
    said = f(tails, {"zonal": fifo, "queuepool": barging}, saturated=True)
    assert said.startswith("p99 wait by time waited 11.8 vs QueuePool's 1,500 ms")
    assert "better than QueuePool's" in said and "beyond the A/A spread" in said
    assert "per request, p99 wait 12 vs 0.01 ms, longest wait 12 vs 1,500 ms" in said
    assert ("leaves out its 10 requests that waited longer than ZonalPool's longest "
            "(0.50% of its requests") in said
    # the other way round: worse, and nothing left out to name
    worse = f({"zonal": [1500.0] * 5, "queuepool": tails["zonal"],
               "zonal_aa": [1490.0, 1510.0, 1500.0, 1505.0, 1495.0]},
              {"zonal": barging, "queuepool": fifo}, saturated=True)
    assert "WORSE than QueuePool's" in worse and "leaves out" not in worse
    # a 3% gap against an A/A pair 20% apart: not shown
    assert "no difference" in f({"zonal": [10.3, 9.7, 10.3, 9.7, 10.3],
                                 "queuepool": [10.0] * 5,
                                 "zonal_aa": [12.0, 8.0, 12.0, 8.0, 12.0]},
                                {"zonal": fifo, "queuepool": fifo}, saturated=True)
    # a per-request p99 a hair worse, with no request of the peer's waiting longer
    # than zonal's longest: nothing left out to name
    even = f({"zonal": [1.0] * 5, "queuepool": [1.1] * 5, "zonal_aa": [1.0] * 5},
             {"zonal": [0.02] * 99 + [0.03], "queuepool": [0.01] * 99 + [0.025]},
             saturated=True)
    assert "leaves out" not in even
    # with no more threads than connections nothing waits for a connection: figures,
    # no judgement
    free = f(tails, {"zonal": fifo, "queuepool": barging}, saturated=False)
    assert free.startswith("no more threads than connections, so no request waits")
    assert "better" not in free and "WORSE" not in free and "leaves out" not in free
    assert "longest wait 12 vs 1,500 ms" in free


def test_time_weighted_percentile_counts_a_wait_for_its_time() -> None:
    twp = workload.time_weighted_percentile
    assert twp([], 99) is None and twp([0.0, 0.0], 99) is None
    # one wait of 1,000 among 999 of 1: a request p99 of 1, yet the long wait is half
    # of all the time waited
    waits = [1.0] * 999 + [1000.0]
    assert workload.percentile(waits, 99) == 1.0
    assert twp(waits, 99) == 1000.0
    assert twp(waits, 40) == 1.0
    # equal waits: every percentile is that wait
    assert twp([5.0] * 100, 99) == 5.0 and twp([5.0] * 100, 1) == 5.0
    # the smallest value at which the running sum reaches q% of the total (6 of 10)
    assert twp([4.0, 1.0, 3.0, 2.0], 60) == 3.0
    assert twp([4.0, 1.0, 3.0, 2.0], 61) == 4.0


def test_held_saturation_counts_each_pools_failed_checkouts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # What the check reports, from the runs it gets (the lab run is the full bench's)
    def run_of(waits_s: list[float], errors: int) -> workload.Run:
        run = workload.Run(elapsed=12.0)
        run.samples = [workload.Sample(start=0.0, took=w + 0.001, value=w) for w in waits_s]
        run.samples += [workload.Sample(start=0.5, took=10.0, error="TimeoutError")
                        for _ in range(errors)]
        return run

    runs = {"zonal": run_of([0.010, 0.0995], 0), "queuepool": run_of([0.0, 2.011], 48)}

    class Fake:
        def __init__(self, kind: str) -> None:
            self.kind = kind
            self.settings = {"pool_timeout": 10}

    @contextlib.contextmanager
    def fake_subject(kind: str, target: object, **kw: object) -> Iterator[Fake]:
        yield Fake(kind)

    monkeypatch.setattr(scenarios, "_subject", fake_subject)
    monkeypatch.setattr(scenarios, "_throughput",
                        lambda s, threads, seconds, waits: runs[s.kind])

    class Ctx:
        def target(self, zones: object) -> None:
            return None

        def progress(self, line: str) -> None:
            pass

    said = scenarios._sustained(Ctx(), 16, 64, 12.0)  # type: ignore[arg-type]
    assert said.startswith("Held past pool_timeout (10 s for both): 64 threads on 16 "
                           "connections for 12 s")
    assert "ZonalPool 0 req/s, 0 errors, longest wait of a request served 99.5 ms" in said
    assert "QueuePool 0 req/s, 48 TimeoutError, longest wait of a request served 2,011 ms" \
        in said


def test_a_run_counts_the_cpu_its_requests_cost_the_client() -> None:
    def burn() -> int:  # pure CPU: a request that never waits
        return sum(i * i for i in range(20_000))

    run = workload.run_workload(burn, threads=2, duration=0.3, max_requests=40)
    assert len(run.samples) == 40 and run.cpu > 0
    per = run.cpu_per_request()
    assert per is not None and per == pytest.approx(run.cpu / 40 * 1e6)
    # sleeping costs no CPU: far less per request than the burn
    idle = workload.run_workload(lambda: workload.time.sleep(0.01), threads=2,
                                 duration=0.3, max_requests=40)
    assert idle.cpu_per_request() is not None and idle.cpu_per_request() < per
    assert workload.Run().cpu_per_request() is None
    z, qp = {"cpu_us": 450.0}, {"cpu_us": 300.0}
    assert scenarios._cpu_ratio(z, qp) == [
        "client CPU per request 1.50x QueuePool's (450 vs 300 µs)"]
    assert scenarios._cpu_ratio(z, {}) == []
    z["switches"], qp["switches"] = 54.5, 50.0
    assert scenarios._cpu_ratio(z, qp) == [
        "client CPU per request 1.50x QueuePool's (450 vs 300 µs; 54.5 vs 50 context "
        "switches)"]


def test_a_run_counts_the_context_switches_of_its_threads() -> None:
    # Each request blocks its thread once at least (a sleep gives up the core), and
    # the count takes in threads that ended before it was read.
    run = workload.run_workload(lambda: workload.time.sleep(0.005), threads=2,
                                duration=0.3, max_requests=40)
    assert len(run.samples) == 40
    per = run.switches_per_request()
    assert per is not None and per == run.switches / 40 and per >= 1
    assert workload.Run().switches_per_request() is None
