"""``zonal bench`` end to end, as a user runs it: a real process, its own lab, files.

No figure is asserted (speed depends on the machine); what must hold is that the
run finishes, every requested subject is accounted for in every scenario, and the
table and the plots are written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from zonal_lab import bench
from zonal_lab.bench import scenarios, subjects
from zonal_lab.binaries import find_pgbouncer

BENCH = [sys.executable, "-m", "zonal_lab.bench"]  # what `zonal bench` runs


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_quick_bench_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
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
        assert seen == set(subjects), (name, seen)
        for row in scenario["rows"]:
            assert "skipped" in row or "label" in row
    overhead = results["scenarios"]["overhead"]
    assert {r["threads"] for r in overhead["rows"] if "ratio" in r} == {1, 4}
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
    assert args.against == [n for n in subjects.SUBJECTS if n != "zonal"]
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
    assert rows.keys() == {"zonal", "queuepool", "psycopg_pool", "django_pool"}
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
