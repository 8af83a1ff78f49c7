"""``zonal bench`` end to end, as a user runs it: a real process, its own lab, files.

No figure is asserted (speed depends on the machine); what must hold is that the
run finishes, every requested subject is accounted for in every scenario, and the
table and the plots are written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zonal_lab.binaries import find_pgbouncer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    against = ["queuepool", "nullpool", "psycopg_pool", "django_pool"]
    proc = subprocess.run(
        [sys.executable, "-m", "zonal_lab.cli", "bench", "--quick",
         "--scenarios", "overhead,affinity", "--against", ",".join(against),
         "--out", str(tmp_path)],
        cwd=tmp_path,  # not the checkout: bench finds benchmarks/ by itself
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
            [sys.executable, "-m", "zonal_lab.cli", "bench", *args, "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert proc.returncode == 2
        assert "choose from" in proc.stderr
    assert not any(tmp_path.iterdir())
