"""``zonal bench``: zonal side by side with the pools users would pick instead.

::

    $ zonal bench                                   # every scenario, every subject
    $ zonal bench --quick                           # the same, shorter (< 3 min on 2 cores)
    $ zonal bench --against queuepool,psycopg_pool --scenarios overhead,failover

It starts its own lab (two zones, PostgreSQL and PgBouncer each, on loopback),
runs each scenario for each subject, prints a line per step, and writes
``<out>/<timestamp>/results.json``, ``results.md`` (tables with ratios against a
peer measured in the same run, the machine noted) and PNG plots.

The scenario code lives in ``benchmarks/`` of a zonal checkout (it is the same
code ``python -m benchmarks.overhead`` and friends run); installed from a wheel
without it, ``zonal bench`` says so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from zonal_lab import bench_plot, bench_report

__all__ = ["DEFAULT_AGAINST", "SCENARIO_NAMES", "add_arguments", "run"]

SUBJECT_NAMES = ("zonal", "queuepool", "nullpool", "psycopg_pool", "django_pool")
DEFAULT_AGAINST = ("queuepool", "nullpool", "psycopg_pool", "django_pool")
SCENARIO_NAMES = ("overhead", "preping", "throughput", "failover", "affinity",
                  "serverless", "memory")

# max_connections covers 50 held by the memory scenario plus every pool of a cell
_SERVER_SETTINGS = {"max_connections": 300}
_PGBOUNCER_SETTINGS = {"default_pool_size": 20, "max_client_conn": 500}


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(items))

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zonal bench``."""
    parser.add_argument(
        "--against", type=_csv(SUBJECT_NAMES), default=list(DEFAULT_AGAINST),
        metavar="LIST",
        help=f"subjects to compare zonal with (default: {','.join(DEFAULT_AGAINST)})")
    parser.add_argument(
        "--scenarios", type=_csv(SCENARIO_NAMES), default=list(SCENARIO_NAMES),
        metavar="LIST", help=f"scenarios to run (default: all: {','.join(SCENARIO_NAMES)})")
    parser.add_argument("--quick", action="store_true",
                        help="shorter measures (under 3 minutes on 2 cores)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="where the timestamped result folder goes (default: %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _find_benchmarks() -> Any:
    """``benchmarks.scenarios``, from the current folder or this checkout's root."""
    try:
        return importlib.import_module("benchmarks.scenarios")
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks", "benchmarks.scenarios"):
            raise
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "benchmarks" / "scenarios.py").is_file():
            sys.path.insert(0, str(root))
            sys.modules.pop("benchmarks", None)
            return importlib.import_module("benchmarks.scenarios")
    return None


class Progress:
    """One line per step on ``stream``, with the time since the start."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.index = 0
        self.t0 = time.monotonic()

    def scenario(self, name: str) -> None:
        self.index += 1
        self.line(f"== [{self.index}/{self.total}] {name}")

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=self.stream, flush=True)


def _write_json(folder: Path, results: dict[str, Any]) -> None:
    tmp = folder / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    tmp.replace(folder / "results.json")


def run(args: argparse.Namespace) -> int:
    """Run the bench; 0 when every scenario ran, 1 when one failed, 2 when it cannot."""
    scenarios_mod = _find_benchmarks()
    if scenarios_mod is None:
        print("zonal bench: the scenario code (benchmarks/) is not here; run it from a "
              "zonal checkout (git clone, then pip install -e '.[dev,bench]')",
              file=sys.stderr)
        return 2
    subjects = ["zonal", *[s for s in args.against if s != "zonal"]]
    names: list[str] = list(args.scenarios)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = Path(args.out) / stamp
    folder.mkdir(parents=True, exist_ok=True)
    progress = Progress(sys.stderr, len(names))
    argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else []
    command = " ".join(["zonal bench", *(shlex.quote(a) for a in argv)])
    labels: dict[str, str] = scenarios_mod.LABELS
    results: dict[str, Any] = {
        "meta": {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                 "command": command, "quick": bool(args.quick), "subjects": subjects,
                 "subjects_labels": [labels[s] for s in subjects], "scenarios": names},
        "machine": bench_report.machine(),
        "scenarios": {},
    }
    progress.line(f"zonal bench -> {folder}  (subjects: {', '.join(subjects)}; "
                  f"scenarios: {', '.join(names)}{'; quick' if args.quick else ''})")
    table = scenarios_mod.SCENARIOS
    lab = None
    failed = 0
    t0 = time.monotonic()
    try:
        if any(table[n][1] for n in names):
            lab = _start_lab(progress)
            results["machine"] = bench_report.machine(lab)
        ctx = scenarios_mod.Context(lab=lab, subjects=subjects, quick=bool(args.quick),
                                    progress=progress.line)
        for name in names:
            fn, _ = table[name]
            progress.scenario(name)
            began = time.monotonic()
            try:
                res = fn(ctx)
            except Exception as exc:  # one scenario failing must not lose the others
                failed += 1
                progress.line(f"{name} FAILED: {type(exc).__name__}: {exc}")
                res = {"title": name, "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc(limit=8)}
                if lab is not None:
                    lab.reset_faults()
            res["seconds"] = round(time.monotonic() - began, 1)
            results["scenarios"][name] = res
            for line in res.get("headline", []):
                progress.line(f"  {line}")
            _write_json(folder, results)
    finally:
        if lab is not None:
            lab.stop()
    results["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    if hasattr(os, "getloadavg"):  # other work on the machine skews every figure
        results["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_plots:
        if bench_plot.available():
            for name, res in results["scenarios"].items():
                try:
                    res["plots"] = bench_plot.plot_scenario(name, res, folder)
                except Exception as exc:  # a plot is a nicety; the figures are written
                    progress.line(f"plot of {name} failed: {type(exc).__name__}: {exc}")
        else:
            progress.line("matplotlib is not installed: no plots "
                          "(fix: pip install 'zonal[bench]')")
    _write_json(folder, results)
    md = bench_report.write_markdown(folder, results)
    progress.line(f"done in {results['meta']['seconds']:.0f} s: {folder / 'results.json'}, "
                  f"{md}")
    return 1 if failed else 0


def _start_lab(progress: Progress) -> Any:
    from zonal_lab import Lab
    from zonal_lab.binaries import find_pgbouncer

    pgbouncer = find_pgbouncer() is not None
    progress.line("starting the lab: zones a and b, PostgreSQL"
                  + (" + PgBouncer (transaction mode)" if pgbouncer else
                     " (PgBouncer not installed: NullPool and PgBouncer cells skipped)"))
    lab = Lab(zones=["a", "b"], pgbouncer=pgbouncer, server_settings=_SERVER_SETTINGS,
              pgbouncer_settings=_PGBOUNCER_SETTINGS if pgbouncer else None)
    lab.start()
    progress.line(f"lab up in {lab.started_in:.1f} s: "
                  + ", ".join(f"{z.name} {z.direct}" for z in lab))
    return lab
