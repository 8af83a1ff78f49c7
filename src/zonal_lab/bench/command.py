"""``zonal bench``: zonal side by side with the pools users would pick instead.

::

    $ zonal bench                                   # every scenario, every subject
    $ zonal bench --quick                           # the same, shorter (< 3 min on 2 cores)
    $ zonal bench --against queuepool,psycopg_pool --scenarios overhead,failover

It starts its own lab (two zones, PostgreSQL and PgBouncer each, on loopback),
runs each scenario for each subject, prints a line per step, and writes
``<out>/<timestamp>/results.json``, ``results.md`` (tables with ratios against a
peer measured in the same run, the machine noted) and PNG plots.

The subjects (:data:`zonal_lab.bench.subjects.SUBJECTS`) and the scenarios
(:data:`zonal_lab.bench.scenarios.SCENARIOS`) are each listed once, there; the
options here take their names from those lists. A subject whose library is not
installed (psycopg_pool, Django) is named, with the command that installs it, and
skipped: its row in every scenario says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from zonal_lab.bench import scenarios, subjects

if TYPE_CHECKING:
    from zonal_lab import Lab

__all__ = ["Progress", "add_arguments", "main", "run"]

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


def _listing(title: str, entries: dict[str, str]) -> str:
    width = max(map(len, entries))
    return title + "\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in entries.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zonal bench``."""
    against = subjects.DEFAULT_AGAINST
    parser.add_argument(
        "--against", type=_csv(subjects.NAMES), default=list(against), metavar="LIST",
        help=f"subjects to compare zonal with, comma-separated (default: {','.join(against)})")
    parser.add_argument(
        "--scenarios", type=_csv(scenarios.NAMES), default=list(scenarios.NAMES),
        metavar="LIST",
        help=f"scenarios to run, comma-separated (default: all: {','.join(scenarios.NAMES)})")
    parser.add_argument("--quick", action="store_true",
                        help="shorter measures (under 3 minutes on 2 cores)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="where the timestamped result folder goes (default: %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        _listing("subjects (--against):",
                 {k: subjects.SUBJECTS[k].help for k in subjects.NAMES}) + "\n\n"
        + _listing("measured by request_shapes only:",
                   {k: s.help for k, s in subjects.SUBJECTS.items() if not s.against})
        + "\n\n"
        + _listing("scenarios:", {k: s.help for k, s in scenarios.SCENARIOS.items()}))


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


def _command_line() -> str:
    """What the user typed, for the results (``zonal bench ...`` or ``python -m``)."""
    argv = sys.argv[1:]
    if argv[:1] == ["bench"]:
        argv = argv[1:]
    elif not sys.argv[0].endswith(os.path.join("zonal_lab", "bench", "__main__.py")):
        argv = []  # called from Python: the arguments are not on sys.argv
    return " ".join(["zonal bench", *(shlex.quote(a) for a in argv)])


def _skipped_scenario(name: str, why: str, kinds: Sequence[str]) -> dict[str, Any]:
    entry = scenarios.SCENARIOS[name]
    return {"title": f"{name}: {entry.help}", "what": f"Not run: {why}.",
            "rows": [scenarios.skip_row(k, why) for k in kinds], "headline": [], "notes": []}


def run(args: argparse.Namespace) -> int:
    """Run the bench; 0 when every scenario ran, 1 when one failed, 2 when it cannot."""
    from zonal_lab.bench import plot, report

    wanted = ["zonal", *[s for s in args.against if s != "zonal"]]
    names: list[str] = list(args.scenarios)
    absent = {k: why for k in wanted if (why := subjects.missing(k)) is not None}
    if "zonal" in absent:
        print(f"zonal bench: cannot measure zonal: {absent['zonal']}", file=sys.stderr)
        return 2
    present = [k for k in wanted if k not in absent]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = Path(args.out) / stamp
    folder.mkdir(parents=True, exist_ok=True)
    progress = Progress(sys.stderr, len(names))
    results: dict[str, Any] = {
        "meta": {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                 "command": _command_line(), "quick": bool(args.quick), "subjects": wanted,
                 "subjects_labels": [subjects.label(s) for s in wanted], "scenarios": names,
                 "not_installed": absent},
        "machine": report.machine(),
        "scenarios": {},
    }
    progress.line(f"zonal bench -> {folder}  (subjects: {', '.join(wanted)}; "
                  f"scenarios: {', '.join(names)}{'; quick' if args.quick else ''})")
    for kind, why in absent.items():
        progress.line(f"skipped: {kind} ({subjects.label(kind)}): {why}")
    lab: Lab | None = None
    failed = 0
    t0 = time.monotonic()
    try:
        if any(scenarios.SCENARIOS[n].needs_lab and scenarios.SCENARIOS[n].missing() is None
               for n in names):
            lab = _start_lab(progress)
            results["machine"] = report.machine(lab)
        ctx = scenarios.Context(lab=lab, subjects=present, quick=bool(args.quick),
                                progress=progress.line)
        for name in names:
            entry = scenarios.SCENARIOS[name]
            progress.scenario(name)
            began = time.monotonic()
            why = entry.missing()
            if why is not None:
                progress.line(f"skipped: {name}: {why}")
                res = _skipped_scenario(name, why, wanted)
            else:
                try:
                    res = entry.run(ctx)
                except Exception as exc:  # one scenario failing must not lose the others
                    failed += 1
                    progress.line(f"{name} FAILED: {type(exc).__name__}: {exc}")
                    res = {"title": name, "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc(limit=8)}
                    if lab is not None:
                        lab.reset_faults()
                # every requested subject has a row: the absent ones say why
                res.setdefault("rows", []).extend(
                    scenarios.skip_row(k, w) for k, w in absent.items())
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
        if plot.available():
            for name, res in results["scenarios"].items():
                try:
                    res["plots"] = plot.plot_scenario(name, res, folder)
                except Exception as exc:  # a plot is a nicety; the figures are written
                    progress.line(f"plot of {name} failed: {type(exc).__name__}: {exc}")
        else:
            progress.line("matplotlib is not installed: no plots "
                          "(fix: pip install 'zonal[bench]')")
    _write_json(folder, results)
    md = report.write_markdown(folder, results)
    progress.line(f"done in {results['meta']['seconds']:.0f} s: {folder / 'results.json'}, "
                  f"{md}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zonal_lab.bench``: the same as ``zonal bench``."""
    parser = argparse.ArgumentParser(
        prog="zonal bench",
        description="zonal side by side with other pools: figures, tables, plots")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("zonal bench: interrupted", file=sys.stderr)
        return 130


def _start_lab(progress: Progress) -> Lab:
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
