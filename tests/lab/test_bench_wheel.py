"""``zonal bench`` from a built wheel, as a user gets it: nothing of the checkout.

The wheel is built from this checkout, installed with ``[lab,bench]`` into a new,
empty virtual environment outside the repository (its dependencies come from the
package index: a minute or two), and ``zonal bench`` runs from an empty folder with
that environment's console script. The scenarios chosen go through every part that
only a checkout used to provide: the fake-driver measure (``overhead``), the real lab
and the subjects (``affinity``), the serverless worker processes (``serverless``: a
fork server that imports ``zonal_lab.bench.serverless``) and the memory child
(``python -m zonal_lab.bench.memory``). Django is not in ``[lab,bench]``: its subject
must be named as not installed and skipped, and the run must still succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from tests.conftest import keep_figure

from zonal_lab.pytest_plugin import require_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = "overhead,affinity,serverless,memory"


def _env() -> dict[str, str]:
    """This process's environment without what would let the checkout or this
    virtual environment leak into the new one."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin)
    return env


def _run(cmd: list[str], timeout: float, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=_env(), cwd=cwd)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-5000:])
    return proc


def test_zonal_bench_runs_from_the_built_wheel(tmp_path_factory: pytest.TempPathFactory,
                                               request: pytest.FixtureRequest) -> None:
    require_lab()
    # the temporary folders live outside the checkout (pytest's base temp)
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    took: dict[str, float] = {}

    t0 = time.monotonic()
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q",
          "-w", str(dist), str(ROOT)], timeout=300)
    (wheel,) = dist.glob("zonal-*.whl")
    took["build"] = time.monotonic() - t0
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("__init__", "__main__", "command", "subjects", "scenarios", "workload",
                   "overhead", "memory", "serverless", "report", "plot", "children",
                   "breakdown"):
        assert f"zonal_lab/bench/{module}.py" in names, module
    assert not [n for n in names if n.startswith("benchmarks/")]

    t0 = time.monotonic()
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          f"{wheel}[lab,bench]"], timeout=600)
    took["install"] = time.monotonic() - t0
    where = _run([str(python), "-c", "import zonal_lab.bench as b; print(b.__file__)"],
                 timeout=60, cwd=base).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not the checkout's

    t0 = time.monotonic()
    empty = base / "empty"
    empty.mkdir()
    out = base / "out"
    proc = _run([str(venv / "bin" / "zonal"), "bench", "--quick", "--scenarios", SCENARIOS,
                 "--out", str(out)], timeout=400, cwd=empty)
    took["bench"] = time.monotonic() - t0
    keep_figure("zonal bench from the wheel", request.node.name,
                ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))

    err = proc.stderr
    assert "skipped: django_pool (Django native pool): Django is not installed " \
           "(pip install 'django>=5.1')" in err, err[-3000:]
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "results.md").stat().st_size > 1000
    assert results["meta"]["not_installed"].keys() == {"django_pool"}
    assert list(results["scenarios"]) == SCENARIOS.split(",")
    subjects = set(results["meta"]["subjects"])
    for name, scenario in results["scenarios"].items():
        assert "error" not in scenario, (name, scenario.get("traceback"))
        # every subject has its row (measured or skipped); a scenario may add its own
        # (overhead: the core container and its A/A twin)
        assert {r["subject"] for r in scenario["rows"]} >= subjects, name
        django = next(r for r in scenario["rows"] if r["subject"] == "django_pool")
        assert "Django is not installed" in django["skipped"], (name, django)
    measured = {name: {r["subject"] for r in s["rows"] if "skipped" not in r}
                for name, s in results["scenarios"].items()}
    assert measured["overhead"] == {"zonal", "queuepool", "zonal_core", "zonal_core_aa"}
    assert {"zonal", "queuepool", "psycopg_pool"} <= measured["affinity"]
    assert {"zonal", "queuepool"} <= measured["serverless"]
    assert {"zonal", "queuepool", "psycopg_pool"} <= measured["memory"]
    assert (folder / "overhead.png").is_file()  # matplotlib came with [bench]
