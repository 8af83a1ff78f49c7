"""The scenarios of ``zonal bench`` (issue 7), each a function of a :class:`Context`.

A scenario returns a plain dict (JSON as is)::

    {"title": ..., "what": ..., "columns": [[key, header], ...], "rows": [{...}],
     "notes": [...], "headline": [...], "plot": {...}}

Every requested subject gets a row in every scenario: its figures, or
``"skipped"`` with the reason. Ratios are always against a peer measured in the
same run (QueuePool unless the column says otherwise). Every loop is bounded by a
request count and a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from zonal_lab.bench.children import child_env
from zonal_lab.bench.subjects import BenchDatabase, Need, Subject, make_subject
from zonal_lab.bench.subjects import label as label_of
from zonal_lab.bench.workload import (
    Run,
    median,
    percentile,
    rotated,
    run_workload,
    time_weighted_percentile,
)

if TYPE_CHECKING:
    from zonal_lab import Lab

__all__ = ["NAMES", "SCENARIOS", "Context", "Scenario", "skip_row"]

T = TypeVar("T")

Result = dict[str, Any]


@dataclass
class Context:
    """What every scenario gets: the lab, the subjects, the mode, a progress line."""

    lab: Lab | None  # None when no scenario of the run needs one
    subjects: list[str]
    quick: bool = False
    progress: Callable[[str], None] = lambda line: None
    extras: dict[str, Any] = field(default_factory=dict)

    def pick(self, quick: T, full: T) -> T:
        return quick if self.quick else full

    @property
    def running_lab(self) -> Lab:
        """The lab, for a scenario that needs it (``Scenario.needs_lab``)."""
        if self.lab is None:
            raise RuntimeError("this scenario needs the lab, and none was started")
        return self.lab

    def target(self, zones: Sequence[str] = ("a",), *, pgbouncer: bool = False,
               proxy: bool = False) -> BenchDatabase:
        lab = self.running_lab
        eps = lab.zones(pgbouncer=pgbouncer, proxy=proxy)
        return BenchDatabase(lab.user, lab.password, lab.database,
                      {z: eps[z] for z in zones}, pgbouncer)

    def zone_of_port(self) -> dict[int, str]:
        return {z.postgres.port: z.name for z in self.running_lab}

    @property
    def has_pgbouncer(self) -> bool:
        return bool(self.lab is not None and self.lab.pgbouncer)


def skip_row(kind: str, why: str, **extra: Any) -> dict[str, Any]:
    """The row of a subject that was not measured, and why."""
    return {"subject": kind, "label": label_of(kind), "skipped": why, **extra}


def _r(value: float | None, nd: int = 2) -> float | None:
    return None if value is None else round(value, nd)


@contextlib.contextmanager
def _subject(kind: str, target: BenchDatabase, **kw: Any) -> Iterator[Subject]:
    s = make_subject(kind, target, **kw)
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            s.close()


def _verdict(ratio: float | None, *, higher_is_better: bool, peer: str) -> str:
    """Plain words for a zonal-vs-peer ratio (zonal / peer)."""
    if ratio is None:
        return "—"
    better = ratio > 1.0 if higher_is_better else ratio < 1.0
    if abs(ratio - 1.0) < 0.03:
        return f"even with {peer}"
    return f"zonal {'wins' if better else 'LOSES'} vs {peer}"


_ROUND_TRIPS = (
    "Each subject does a request the way its users' code does: SQLAlchemy "
    "(zonal, QueuePool, NullPool) BEGIN + query + ROLLBACK, psycopg_pool's connection() "
    "BEGIN + query + COMMIT, Django autocommit (the query alone, one round trip). So "
    "Django and psycopg_pool against the SQLAlchemy pools compares stacks, not only "
    "pools; zonal against QueuePool is the like-for-like pair.")


# -- the method: interleaved rounds, their spread, an A/A pair ----------------------


def _spread(values: Sequence[float], nd: int = 0) -> str | None:
    """``min-max`` of the rounds."""
    if not values:
        return None
    lo, hi = min(values), max(values)
    return f"{lo:,.{nd}f}..{hi:,.{nd}f}"


def _aa_noise(aa: Sequence[float]) -> float | None:
    """The A/A spread: the largest gap from 1.0 of the A/A pair's per-round ratios (the
    same subject measured as two subjects in the same round, see :func:`_per_round`)."""
    return max(abs(r - 1.0) for r in aa) if aa else None


def _per_round(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a_i / b_i`` for each round both measured (the pair's ratio, round by round)."""
    return [x / y for x, y in zip(a, b, strict=False) if y]


def _judge(ratio: float | None, pair: Sequence[float], aa: Sequence[float], *,
           higher_is_better: bool, peer: str) -> str:
    """A zonal-vs-peer ratio (``ratio``, zonal / peer of the medians) against the noise.

    ``pair``: the same ratio round by round; ``aa``: the A/A pair's ratio round by round.
    The A/A spread is the largest gap of an A/A round from 1.0. A gap beyond it is shown
    by the medians; a gap inside it is still shown when every round (at least 5) puts
    zonal on the same side (a sign test, p = 2 / 2**rounds); otherwise none is shown."""
    if ratio is None:
        return "—"
    better = ratio > 1.0 if higher_is_better else ratio < 1.0
    gap = abs(ratio - 1.0)
    word = "better" if better else "WORSE"
    rng = f"rounds {min(pair):.2f}..{max(pair):.2f}x" if pair else "no rounds"
    noise = _aa_noise(aa)
    if noise is None:
        return f"{gap:.0%} {word} than {peer} ({rng}; no A/A pair measured: noise unknown)"
    if gap > noise:
        return f"{gap:.0%} {word} than {peer} ({rng}), beyond the A/A spread (±{noise:.0%})"
    n = len(pair)
    if n >= 5 and (all(r > 1.0 for r in pair) or all(r < 1.0 for r in pair)):
        side = "better" if (pair[0] > 1.0) == higher_is_better else "WORSE"
        return (f"{side} than {peer} in all {n} rounds ({rng}; sign test p = {2 / 2**n:.2f}), "
                f"a gap inside the A/A spread (±{noise:.0%})")
    return f"no difference from {peer} shown: {rng} against an A/A spread of ±{noise:.0%}"


def _target(ratio: float | None, goal: float, *, higher_is_better: bool, why: str) -> str:
    """Whether a ratio meets its target; a miss says by how much and why (the profile's
    reason, :data:`MISSED_BECAUSE`)."""
    if ratio is None:
        return "target not measured"
    sign = ">=" if higher_is_better else "<="
    if ratio >= goal if higher_is_better else ratio <= goal:
        return f"target {sign} {goal:g}x met"
    gap = abs(ratio / goal - 1.0)
    return f"target {sign} {goal:g}x MISSED by {gap:.{0 if gap >= 0.01 else 1}%}: {why}"


_DJANGO_PYTHON = (
    "per request zonal_django runs no more Python than Django's pool (breakdown section "
    "5, bytecodes per request), but more of its work is C calls that count as single "
    "bytecodes: each connect checks that the settings, time zone, connection "
    "parameters and zonal's environment variables are unchanged (Django's pool is "
    "built once), each checkout reads the time zone the server reported (Django's "
    "pool sets it once per connection), and the core reads the clock on checkout and "
    "on checkin")

MISSED_BECAUSE = {
    "overhead": (
        "SQLAlchemy's own checkout and checkin (fairy, record, reset) are the same for "
        "both pools; zonal's part reads the clock on checkout and on checkin (QueuePool "
        "reads none), checks on each the deadline of its fast steps (the route's "
        "validity, the next reaping) and on checkin the connection's lifetime, the idle "
        "gap and the generation, and counts the checkout and the time in use per zone, "
        "where QueuePool's queue only pops and pushes (breakdown section 5: the bytecodes "
        "of each)"),
    "throughput": (
        "with no more threads than connections a request never waits: zonal's checkout "
        "and checkin add under a microsecond of Python (the overhead scenario) to a "
        "request of over a hundred (the breakdown); zonal lends the connection used "
        "last (LIFO, so that the others age out) where QueuePool rotates them (FIFO), "
        "which with the server on the same machine costs zonal kernel time per request "
        "(breakdown section 4); beyond that, the A/A verdict sizes the machine's noise"),
    "throughput_saturated": (
        "with more threads than connections zonal hands each returned connection to the "
        "longest waiter (FIFO), so every checkout blocks and is woken: a thread switch "
        "and a GIL handoff per request; QueuePool lets the returning thread take its "
        "connection straight back without blocking, faster but unfair (see the longest "
        "wait of the threads it leaves waiting)"),
    "request_shapes": (
        f"{_DJANGO_PYTHON}; and, as for the core, the LIFO reuse of the connection used "
        "last costs kernel time with the server on the same machine (breakdown section "
        "4); under the GIL the CPU time per request sets the req/s"),
    "request_shapes_saturated": (
        f"{_DJANGO_PYTHON}; with more threads than connections both pools hand a "
        "returned connection to the checkout waiting longest (zonal counts the checkout "
        "and its wait there, in the checkin's locked step); under the GIL the CPU time "
        "per request sets the req/s"),
    "core": (
        "the core runs no more Python than psycopg_pool per request (the breakdown's "
        "bytecodes and user CPU; with a pool of one connection each the two are even): "
        "the gap is "
        "kernel time. zonal lends the connection used last (LIFO: the others age out "
        "and close), psycopg_pool rotates them (FIFO); with the server on the same "
        "machine, a request sent to the server process that has just answered costs "
        "the client more system time than one sent to a process idle for longer "
        "(breakdown section 4: raw psycopg on one connection against 4 in turn)"),
    "core_saturated": (
        "with more threads than connections both pools hand a returned connection to "
        "the checkout waiting longest, and run about as much Python per request "
        "(breakdown: zonal's checkout that joins a line the last dispatch found "
        "unservable skips the dispatch); no cause beyond the rounds' noise was found"),
    "preping": (
        "a checkout pings only a connection idle for longer than ping_bypass (the "
        "'checkouts pinged' column says how many were): beyond those, the gap is the "
        "check whether to ping and the rounds' noise"),
}
"""Why a target is missed, from the profile (cProfile and py-spy of these request
shapes; docs/performance.md "Where the time goes"): a verdict that misses says it."""


# -- 1. overhead ----------------------------------------------------------------


def overhead(ctx: Context) -> Result:
    from zonal_lab.bench import overhead as ov

    ops = ctx.pick(30_000, 200_000)
    rounds = ctx.pick(5, 7)
    rows: list[dict[str, Any]] = []
    headline: list[str] = []
    bars: dict[str, list[float]] = {ov.LABELS[n]: [] for n in ov.SUBJECTS}
    groups: list[str] = []
    # the registry's subject each timed pool stands for (rows carry the registry name)
    kind_of = {"zonal_core": "zonal_core", "zonal_core_aa": "zonal_core_aa",
               "zonalpool": "zonal", "queuepool": "queuepool"}
    for threads in (1, 4):
        ctx.progress(f"overhead: {threads} thread(s), {rounds} interleaved rounds of {ops} ops")
        samples = ov.measure_rounds(threads, ops, rounds)
        us = {n: median(v) or 0.0 for n, v in samples.items()}
        aa = _per_round(samples["zonal_core_aa"], samples["zonal_core"])
        noise = _aa_noise(aa)
        qp = us["queuepool"]
        for name in ov.SUBJECTS:
            ratio = us[name] / qp if qp else None
            row: dict[str, Any] = {"subject": kind_of[name], "label": ov.LABELS[name],
                                   "threads": threads, "us": _r(us[name]),
                                   "spread": _spread(samples[name], 2), "ratio": _r(ratio),
                                   "rounds": [round(x, 3) for x in samples[name]]}
            if name in ("zonal_core", "zonalpool") and ratio is not None:
                row["target"] = "<= 1.0x"
                row["verdict"] = _target(
                    ratio, 1.0, higher_is_better=False, why=MISSED_BECAUSE["overhead"]
                ) + "; " + _judge(ratio, _per_round(samples[name], samples["queuepool"]), aa,
                                  higher_is_better=False, peer="QueuePool")
            elif name == "zonal_core_aa":
                twice = us[name] / us["zonal_core"] if us["zonal_core"] else None
                row["verdict"] = (f"A/A: {twice:.2f}x the core, per-round spread "
                                  f"±{noise:.0%}" if twice is not None and noise is not None
                                  else "—")
            rows.append(row)
        zp, core = us["zonalpool"], us["zonal_core"]
        headline.append(
            f"Overhead, {threads} thread{'s' if threads > 1 else ''}: ZonalPool through "
            f"SQLAlchemy's pool.connect()/close() {zp / qp:.2f}x QueuePool's time "
            f"({zp:.2f} vs {qp:.2f} µs; target <= 1.0x {'met' if zp <= qp else 'MISSED'}); "
            f"the core container's getconn/putconn {core / qp:.2f}x ({core:.2f} µs); "
            + (f"A/A spread ±{noise:.0%}" if noise is not None else "no A/A"))
        groups.append(f"{threads} thread{'s' if threads > 1 else ''}")
        for name in ov.SUBJECTS:
            bars[ov.LABELS[name]].append(us[name])
    for kind in ctx.subjects:
        if kind not in ("zonal", "queuepool"):
            rows.append(skip_row(kind, "needs a real connection: the fake-driver measure takes "
                                    "pools built on a creator (zonal core, ZonalPool, "
                                    "QueuePool)"))
    return {
        "title": "1. Overhead: checkout + checkin, fake driver",
        "what": f"µs per checkout+checkin (median of {rounds} interleaved rounds of {ops} "
                "ops, min-max of the rounds beside it) on a connection that costs nothing "
                "(python -m zonal_lab.bench.overhead): zonal's core container "
                "(CorePool.getconn/putconn, measured twice: the A/A pair), ZonalPool and "
                "QueuePool both through SQLAlchemy's pool API (pool.connect() then the "
                "fairy's close(), reset-on-return included).",
        "columns": [["threads", "threads"], ["label", "subject"], ["us", "µs/op"],
                    ["spread", "min-max µs"], ["ratio", "vs QueuePool"],
                    ["target", "target"], ["verdict", "verdict"]],
        "rows": rows, "headline": headline,
        "notes": ["A ratio's verdict says whether its gap to 1.0 exceeds the A/A spread "
                  "(the largest per-round gap between the core and itself measured as a "
                  "second subject in the same rounds), or else whether every round puts "
                  "it on the same side of 1.0 (a sign test); a missed target says by how "
                  "much and where the profile finds the time."],
        "plot": {"kind": "bars", "ylabel": "µs per checkout+checkin (lower is better)",
                 "groups": groups, "series": bars},
    }


# -- 2. pre-ping cost -------------------------------------------------------------


def _throughput(s: Subject, threads: int, seconds: float, sql: str = "select 1", *,
                waits: bool = False) -> Run:
    """``threads`` clients querying ``s`` for ``seconds``. Each sample's value is the
    query's result or, with ``waits``, the seconds its checkout took (the wait for a
    connection, the pool's own steps included)."""
    request = (lambda: _waited(s, sql)) if waits else (lambda: s.query(sql))
    s.prefill(min(threads, s.size))  # every connection the run can use is open
    run_workload(request, threads=threads, duration=min(0.3, seconds / 3),
                 max_requests=2_000)  # warm: caches filled
    return run_workload(request, threads=threads, duration=seconds, max_requests=2_000_000)


def _cpu_ratio(z: dict[str, Any], qp: dict[str, Any]) -> list[str]:
    """The client's CPU per request against QueuePool's, where both were measured,
    with the context switches per request beside it where both were counted."""
    if not z.get("cpu_us") or not qp.get("cpu_us"):
        return []
    said = (f"client CPU per request {z['cpu_us'] / qp['cpu_us']:.2f}x QueuePool's "
            f"({z['cpu_us']:g} vs {qp['cpu_us']:g} µs")
    if z.get("switches") is not None and qp.get("switches") is not None:
        said += f"; {z['switches']:g} vs {qp['switches']:g} context switches"
    return [said + ")"]


def _waited(s: Subject, sql: str) -> float:
    """One request; returns how long its checkout took, in seconds."""
    t0 = time.perf_counter()
    with s.checkout() as run:
        waited = time.perf_counter() - t0
        run(sql)
    return waited


def preping(ctx: Context) -> Result:
    seconds = ctx.pick(0.4, 2.0)
    rounds = ctx.pick(5, 7)
    threads = 4
    target = ctx.target(("a",))
    rows: list[dict[str, Any]] = []
    headline: list[str] = []
    groups: list[str] = []
    series: dict[str, list[float]] = {"pre-ping off": [], "pre-ping on": []}
    for kind in ctx.subjects:
        if kind == "nullpool":
            rows.append(skip_row(kind, "opens a new connection per checkout: nothing to ping"))
            continue
        # "off2": zonal's no-ping measure again, the A/A pair that sizes the noise
        modes = ["off", "on", "off2"] if kind == "zonal" else ["off", "on"]
        tput: dict[str, list[float]] = {m: [] for m in modes}
        pings = [0, 0]  # pings, checkouts (with pre-ping on), where the pool counts them
        for rnd in range(rounds):
            # rotate which goes first: whatever drifts (load, caches) hits all alike
            for mode in rotated(modes, rnd):
                ping = mode == "on"
                with _subject(kind, target, size=threads, ping=ping) as s:
                    ctx.progress(f"pre-ping: {s.label}, {mode}, round {rnd + 1}/{rounds}, "
                                 f"{threads} threads, {seconds:g} s")
                    run = _throughput(s, threads, seconds)
                    tput[mode].append(run.throughput())
                    if ping and hasattr(s.pool, "stats"):  # zonal counts its pings
                        zs = s.pool.stats().zones.values()
                        pings[0] += sum(z.pings for z in zs)
                        pings[1] += sum(z.checkouts for z in zs)
        off, on = median(tput["off"]) or 0.0, median(tput["on"]) or 0.0
        kept = on / off if off else None
        row = {"subject": kind, "label": label_of(kind), "off": _r(off, 0), "on": _r(on, 0),
               "off_spread": _spread(tput["off"]), "on_spread": _spread(tput["on"]),
               "kept": _r(None if kept is None else kept * 100, 1),
               "pings": f"{pings[0]:,} of {pings[1]:,}" if pings[1] else "every one"}
        if kind == "zonal":
            aa = (median(tput["off2"]) or 0.0) / off if off else None
            row["aa"] = _r(None if aa is None else aa * 100, 1)
            row["target"] = ">= 95%"
            row["verdict"] = _target(kept, 0.95, higher_is_better=True,
                                     why=MISSED_BECAUSE["preping"]) + "; " + _judge(
                kept, _per_round(tput["on"], tput["off"]), _per_round(tput["off2"], tput["off"]),
                higher_is_better=True, peer="pre-ping off")
        rows.append(row)
        groups.append(label_of(kind))
        series["pre-ping off"].append(off)
        series["pre-ping on"].append(on)
    by = {r["subject"]: r for r in rows if "skipped" not in r}
    z = by.get("zonal")
    if z:
        line = f"Pre-ping: zonal keeps {z['kept']}% of its no-ping SELECT 1 throughput " \
               f"({z['verdict']})"
        if "queuepool" in by:
            line += f"; QueuePool keeps {by['queuepool']['kept']}%"
        headline.append(line)
    notes = ["checkouts pinged: counted by zonal's stats(); the others ping every checkout "
             "by design (not counted).",
             "A/A: zonal with pre-ping off measured a second time in the same rounds; the "
             "verdict says whether zonal's on/off gap exceeds the largest per-round gap "
             "between those two identical measures (the A/A spread), or else whether "
             "every round's on/off ratio is on the same side (a sign test).",
             "zonal skips the ping for a connection used less than ping_bypass (0.5 s) ago; "
             "QueuePool (pool_pre_ping) pings on every checkout; psycopg_pool's "
             "check=check_connection and Django's CONN_HEALTH_CHECKS with a pool check every "
             "checkout too."]
    return {
        "title": "2. Pre-ping cost: SELECT 1 throughput, pre-ping off vs on",
        "what": f"requests/s of `SELECT 1` (checkout, query, checkin), {threads} threads, "
                f"pool of {threads}, zone a direct, {seconds:g} s per measure, median of "
                f"{rounds} interleaved rounds (min-max beside it); A/A % = zonal's second "
                "no-ping measure / its first.",
        "columns": [["label", "subject"], ["off", "req/s, no ping"],
                    ["off_spread", "min-max"], ["on", "req/s, ping"],
                    ["on_spread", "min-max"], ["kept", "% kept"], ["aa", "A/A %"],
                    ["pings", "checkouts pinged"], ["target", "target"],
                    ["verdict", "verdict"]],
        "rows": rows, "headline": headline, "notes": notes,
        "plot": {"kind": "bars", "ylabel": "SELECT 1 per second (higher is better)",
                 "groups": groups, "series": series},
    }


# -- 3. throughput ------------------------------------------------------------------


def _ms(v: float) -> str:
    """A wait in ms, three significant figures, never in exponent form."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _fairness(tails: dict[str, list[float]], waits: dict[str, list[float]], *,
              saturated: bool) -> str:
    """Whether ZonalPool's waits for a connection stay fair against QueuePool's.

    With more threads than connections (``saturated``), judged on the p99 wait by time
    waited (each round's, see :func:`time_weighted_percentile`): the medians, round by
    round against the A/A pair's (see :func:`_judge`); then the per-request p99 and the
    longest wait, and the requests the per-request p99 leaves out where it reads the
    other way. Otherwise no request waits for a connection (a checkout's time is its
    own steps): the figures, no judgement. ``tails``: each round's p99 by time waited,
    per subject; ``waits``: every request's wait (ms), per subject."""
    z, qp, aa = tails.get("zonal", []), tails.get("queuepool", []), tails.get("zonal_aa", [])
    zw, qw = waits.get("zonal", []), waits.get("queuepool", [])
    if not z or not qp or not zw or not qw:
        return "p99 wait not measured"
    zm, qm = median(z) or 0.0, median(qp) or 0.0
    zp, qpp = percentile(zw, 99) or 0.0, percentile(qw, 99) or 0.0
    zmax, qmax = max(zw), max(qw)
    by_time = (f"p99 wait by time waited {_ms(zm)} vs QueuePool's {_ms(qm)} ms (medians of "
               "the rounds')")
    per_request = (f"per request, p99 wait {_ms(zp)} vs {_ms(qpp)} ms, longest wait "
                   f"{_ms(zmax)} vs {_ms(qmax)} ms")
    if not saturated:
        return ("no more threads than connections, so no request waits for a connection "
                f"(a checkout's time is the pool's own steps): {by_time}; {per_request}")
    said = by_time
    if qm:
        said += ": " + _judge(zm / qm, _per_round(z, qp), _per_round(aa, z),
                              higher_is_better=False, peer="QueuePool's")
    said += f"; {per_request}"
    left = sum(1 for w in qw if w > zmax)
    if zp > qpp and zm < qm and left:
        said += (f": QueuePool's per-request p99 leaves out its {left:,} requests that "
                 f"waited longer than ZonalPool's longest ({left / len(qw):.2%} of its "
                 "requests, under the 1% a p99 sees): a thread left waiting for most of "
                 "the measure makes one request while the others make hundreds")
    return said


def _sustained(ctx: Context, size: int, threads: int, seconds: float) -> str:
    """ZonalPool and QueuePool saturated for longer than their ``pool_timeout``:
    whether a thread is left waiting until its checkout fails."""
    parts: list[str] = []
    timeouts: set[float] = set()
    for kind in ("zonal", "queuepool"):
        with _subject(kind, ctx.target(("a",)), size=size) as s:
            ctx.progress(f"throughput: direct, {threads} threads, {label_of(kind)}, "
                         f"{seconds:g} s, held past pool_timeout")
            run = _throughput(s, threads, seconds, waits=True)
        timeouts.add(float(s.settings["pool_timeout"]))
        kinds = Counter(e.error or "?" for e in run.errors())
        failed = ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items())) or "0 errors"
        longest = max((x.value * 1e3 for x in run.ok()), default=0.0)
        parts.append(f"{'ZonalPool' if kind == 'zonal' else 'QueuePool'} "
                     f"{run.throughput():,.0f} req/s, {failed}, longest wait of a request "
                     f"served {_ms(longest)} ms")
    timeout = " and ".join(f"{t:g} s" for t in sorted(timeouts))
    return (f"Held past pool_timeout ({timeout}{' for both' if len(timeouts) == 1 else ''}): "
            f"{threads} threads on {size} connections for {seconds:g} s, direct, once each: "
            + "; ".join(parts)
            + " (a TimeoutError is a checkout that waited pool_timeout and failed).")


def throughput(ctx: Context) -> Result:
    seconds = ctx.pick(0.8, 1.5)
    thread_counts = ctx.pick((4, 64), (4, 16, 64))
    rounds = ctx.pick(2, 5)
    size = 16
    paths = [False, True] if ctx.has_pgbouncer else [False]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    if not ctx.has_pgbouncer:
        notes.append("PgBouncer is not installed here: only direct connections measured.")
    # ZonalPool measured twice in every round (the A/A pair that sizes the noise)
    names = [*ctx.subjects, *(["zonal_aa"] if "zonal" in ctx.subjects else [])]
    labels = {n: label_of(n) if n != "zonal_aa" else label_of("zonal") + " again (A/A)"
              for n in names}
    plot_groups: list[str] = []
    plot_series: dict[str, list[float]] = {labels[n]: [] for n in names}
    for pgb in paths:
        path = "PgBouncer" if pgb else "direct"
        target = ctx.target(("a",), pgbouncer=pgb)
        for threads in thread_counts:
            cell: dict[str, dict[str, Any]] = {}
            tputs: dict[str, list[float]] = {}
            lats: dict[str, list[float]] = {}
            tails: dict[str, list[float]] = {}  # each round's p99 wait by time waited
            waits: dict[str, list[float]] = {}  # every request's wait (ms)
            errs: dict[str, int] = {}
            cpus: dict[str, list[float]] = {}  # client CPU us per request, each round's
            switches: dict[str, list[float]] = {}  # context switches per request, each round's
            for rnd in range(rounds):  # rounds interleave subjects: noise hits all alike
                for name in rotated(names, rnd):
                    kind = "zonal" if name == "zonal_aa" else name
                    if kind == "nullpool" and not pgb:
                        cell[name] = skip_row(kind, "NullPool is measured behind PgBouncer only",
                                              path=path, threads=threads)
                        continue
                    with _subject(kind, target, size=size) as s:
                        ctx.progress(f"throughput: {path}, {threads} threads, {labels[name]}, "
                                     f"{seconds:g} s, round {rnd + 1}/{rounds}")
                        run = _throughput(s, threads, seconds, waits=True)
                    tputs.setdefault(name, []).append(run.throughput())
                    cpu, sw = run.cpu_per_request(), run.switches_per_request()
                    if cpu is not None and sw is not None:
                        cpus.setdefault(name, []).append(cpu)
                        switches.setdefault(name, []).append(sw)
                    lats.setdefault(name, []).extend(run.latencies_ms())
                    if not s.lazy:  # (a lazy subject's wait is inside its query)
                        waited = [x.value * 1e3 for x in run.ok()]
                        waits.setdefault(name, []).extend(waited)
                        tail = time_weighted_percentile(waited, 99)
                        if tail is not None:
                            tails.setdefault(name, []).append(tail)
                    errs[name] = errs.get(name, 0) + len(run.errors())
            for name, values in tputs.items():
                lat = lats[name]
                cell[name] = {"subject": name, "label": labels[name], "path": path,
                              "threads": threads, "rps": _r(median(values), 0),
                              "spread": _spread(values),
                              "cpu_us": _r(median(cpus.get(name, [])), 1),
                              "switches": _r(median(switches.get(name, [])), 1),
                              "mean": _r(sum(lat) / len(lat) if lat else None, 3),
                              "p50": _r(percentile(lat, 50), 3),
                              "p99": _r(percentile(lat, 99), 3),
                              "wait_p99": _r(percentile(waits.get(name, []), 99), 3),
                              "wait_tail": _r(median(tails.get(name, [])), 3),
                              "wait_max": _r(max(waits.get(name, []), default=None), 1),
                              "errors": errs[name],
                              "rounds": [round(v) for v in values]}
            cell = {n: cell[n] for n in names if n in cell}
            peer = cell.get("queuepool", {}).get("rps")
            for row in cell.values():
                if peer and row.get("rps") is not None:
                    row["vs_qp"] = _r(row["rps"] / peer)
            z, qp, aa = cell.get("zonal", {}), cell.get("queuepool", {}), cell.get("zonal_aa", {})
            if z.get("rps") and qp.get("rps"):
                ratio = z["rps"] / qp["rps"]
                z["target"] = ">= 1.0x QP, p99 wait no worse"
                z["verdict"] = "; ".join((
                    _target(ratio, 1.0, higher_is_better=True, why=MISSED_BECAUSE[
                        "throughput_saturated" if threads > size else "throughput"]),
                    _judge(ratio, _per_round(tputs["zonal"], tputs["queuepool"]),
                           _per_round(tputs.get("zonal_aa", []), tputs["zonal"]),
                           higher_is_better=True, peer="QueuePool"),
                    _fairness(tails, waits, saturated=threads > size),
                    *_cpu_ratio(z, qp)))
            if aa.get("rps") and z.get("rps"):
                noise = _aa_noise(_per_round(tputs["zonal_aa"], tputs["zonal"])) or 0.0
                aa["verdict"] = (f"A/A: {aa['rps'] / z['rps']:.2f}x ZonalPool, per-round "
                                 f"spread ±{noise:.0%}")
            rows.extend(cell.values())
            plot_groups.append(f"{path}\n{threads} thr")
            for name in names:
                plot_series[labels[name]].append(float(cell[name].get("rps") or 0.0))
    headline = []
    sustained = ctx.pick(0.0, 12.0)
    if sustained and "zonal" in ctx.subjects and "queuepool" in ctx.subjects:
        said = _sustained(ctx, size, max(thread_counts), sustained)
        headline.append(said)
        notes.append(said)
    for pgb in paths:
        path = "PgBouncer" if pgb else "direct"
        zr = [r for r in rows if r["subject"] == "zonal" and r["path"] == path and "vs_qp" in r]
        if zr:
            met = sum(1 for r in zr if r["vs_qp"] >= 1.0)
            headline.append(f"Throughput ({path}): ZonalPool " + ", ".join(
                f"{r['vs_qp']:.2f}x QueuePool at {r['threads']} threads" for r in zr)
                + f" (target >= 1.0x met in {met} of {len(zr)})")
    notes.append(f"Pool of {size} connections for every pooled subject (QueuePool "
                 "max_overflow=0, psycopg_pool min_size=4 max_size=16); behind PgBouncer "
                 "every psycopg subject has prepare_threshold=None (transaction mode needs it).")
    notes.append("With more threads than connections the pool is saturated: the mean "
                 "latency is then fixed by the throughput (threads / req/s, Little's law), "
                 "and the waits show how fairly it is shared. zonal hands a returned "
                 "connection to the longest waiter (FIFO: every request waits about as "
                 "long); QueuePool lets a running thread take a returned connection before "
                 "the woken waiter runs (most requests do not wait; the threads left "
                 "waiting can wait the whole measure).")
    notes.append("The wait is the time a request's checkout took (the pool's own steps "
                 "included). p99 wait per request: 99% of the requests waited at most "
                 "this long. p99 wait by time waited: 99% of all the time the threads "
                 "spent waiting was in waits at most this long (each round's, median of "
                 "the rounds). The two differ where a few threads wait long: a thread "
                 "left waiting for the whole measure makes one request there, so the "
                 "per-request p99 leaves it out once those threads make under 1% of the "
                 "requests, while its wait is most of the time waited. The fairness "
                 "verdict judges the second, with the first and the longest wait beside it. "
                 "Django connects at a request's first query, inside the request: its "
                 "wait is not measured apart.")
    notes.append("Client CPU µs/req: the bench process's CPU time (user + system, every "
                 "thread) over a measure, divided by the requests it made (median of the "
                 "rounds): what a request costs the client (SQLAlchemy, the pool, the "
                 "driver, the thread switches of waiting), without the server's share. "
                 "It moves with req/s: in a slow round each request also costs the client "
                 "more system time. Context switches/req: the bench process's switches "
                 "(voluntary: a thread blocked on a lock, the GIL or a socket; "
                 "involuntary: the kernel took the core), every thread, over the same "
                 "measure, per request: where a pool makes its threads wait.")
    notes.append(_ROUND_TRIPS)
    return {
        "title": "3. Throughput and latency against one zone",
        "what": f"`SELECT 1` per second, p50/p99 latency and the wait for a connection (ms) "
                f"with 4-64 client threads, "
                f"{seconds:g} s per measure, req/s the median of {rounds} interleaved "
                "rounds (min-max beside it; each round in a new order, ZonalPool measured "
                "twice: the A/A pair), latencies over all of them; zone a direct and through "
                "its PgBouncer (transaction mode); `vs QP` is req/s relative to QueuePool in "
                "the same cell.",
        "columns": [["path", "path"], ["threads", "threads"], ["label", "subject"],
                    ["rps", "req/s"], ["spread", "min-max req/s"], ["vs_qp", "vs QP"],
                    ["cpu_us", "client CPU µs/req"],
                    ["switches", "context switches/req"], ["mean", "mean ms"],
                    ["p50", "p50 ms"], ["p99", "p99 ms"],
                    ["wait_p99", "p99 wait ms (per request)"],
                    ["wait_tail", "p99 wait ms (by time waited)"],
                    ["wait_max", "longest wait ms"],
                    ["errors", "errors"], ["target", "target"], ["verdict", "verdict"]],
        "rows": rows, "headline": headline, "notes": notes,
        "plot": {"kind": "bars", "ylabel": "SELECT 1 per second (higher is better)",
                 "groups": plot_groups, "series": plot_series},
    }


# -- 4. failover --------------------------------------------------------------------


def _failover_subjects(ctx: Context) -> list[tuple[str, bool, bool, dict[str, Any]]]:
    """(kind, ping, via PgBouncer, extra zonal options) as a user would configure
    each for failover. ``--quick`` keeps zonal and QueuePool + pre-ping."""
    out: list[tuple[str, bool, bool, dict[str, Any]]] = []
    for kind in ctx.subjects:
        if kind == "zonal":
            out.append(("zonal", True, False, {}))
            if not ctx.quick:  # the bypass window's price, shown: ping every checkout
                out.append(("zonal", True, False, {"ping_bypass": 0}))
        elif kind == "queuepool":
            if not ctx.quick:
                out.append(("queuepool", False, False, {}))
            out.append(("queuepool", True, False, {}))
        elif ctx.quick:
            continue
        elif kind == "nullpool":
            if ctx.has_pgbouncer:
                out.append(("nullpool", False, True, {}))
        else:
            out.append((kind, True, False, {}))
    return out


def _sustained_local(run: Run, since: float, local: str, zone_of: dict[int, str],
                     min_samples: int, min_span: float) -> float | None:
    """Earliest time after ``since`` from which every request was served locally
    without error (at least ``min_samples`` of them over ``min_span`` s)."""
    tail: list[float] = []
    for s in reversed(run.samples):
        if s.start < since:
            break
        if s.error is None and zone_of.get(s.value) == local:
            tail.append(s.start)
        else:
            break
    if len(tail) >= min_samples and tail[0] - tail[-1] >= min_span:
        return tail[-1]
    return None


def failover(ctx: Context) -> Result:
    pre = ctx.pick(0.8, 2.0)
    after = ctx.pick(3.0, 8.0)
    back_window = ctx.pick(5.0, 20.0)
    failback_after = ctx.pick(1.0, 5.0)
    threads, think = 4, 0.01
    zone_of = ctx.zone_of_port()
    zonal_opts = {"connect_timeout": 2, "query_timeout": 2, "ping_timeout": 1,
                  "failback_after": failback_after, "pool_timeout": 10}
    rows: list[dict[str, Any]] = []
    timelines: list[dict[str, Any]] = []
    faults = ("kill", "pause")
    for fault in faults:
        for kind, ping, pgb, extra in _failover_subjects(ctx):
            target = ctx.target(("a", "b"), pgbouncer=pgb)
            zone = ctx.running_lab["a"]
            do_fault = zone.kill if fault == "kill" else zone.pause
            repair = zone.start if fault == "kill" else zone.resume
            with _subject(kind, target, size=threads, ping=ping,
                          failover={**zonal_opts, **extra}) as s:
                ctx.progress(f"failover: {fault} zone a, {s.label} "
                             f"(up to {pre + after + back_window:g} s)")
                # the pool is warm and every connection local before the fault
                for _ in range(threads * 3):
                    s.query("select 1")
                restore_at = pre + after

                def until(run: Run, now: float, _r: float = restore_at) -> bool:
                    return _sustained_local(run, _r, "a", zone_of, 20, 1.0) is not None

                run = run_workload(
                    lambda s=s: s.query("select inet_server_port()"),  # type: ignore[misc]
                    threads=threads, duration=pre + after + back_window,
                    max_requests=200_000, think=think, grace=3.0,
                    events=[(pre, "fault", do_fault), (restore_at, "restore", repair)],
                    until=until,
                )
                released = run.join(15.0)
                settings = dict(s.settings)
                label = s.label + (", ping_bypass=0" if extra.get("ping_bypass") == 0 else "")
            ctx.running_lab.reset_faults()
            row = _failover_row(run, kind, label, fault, zone_of, released)
            row["settings"] = settings
            rows.append(row)
            timelines.append({"fault": fault, "label": label, "marks": run.marks,
                              "samples": [[round(x.start, 4), round(x.took * 1e3, 3),
                                           zone_of.get(x.value), x.error]
                                          for x in run.samples]})
    measured = {r["subject"] for r in rows}
    for kind in ctx.subjects:
        if kind in measured:
            continue
        if ctx.quick:
            rows.append(skip_row(kind, "--quick compares zonal with QueuePool + pre-ping only"))
        elif kind == "nullpool" and not ctx.has_pgbouncer:
            rows.append(skip_row(kind, "PgBouncer is not installed here"))
    headline = []
    for fault in faults:
        z = next((r for r in rows if r.get("fault") == fault and r["label"] == label_of("zonal")),
                 None)
        qp = next((r for r in rows if r.get("fault") == fault and r["subject"] == "queuepool"
                   and "pre-ping" in r["label"]), None)
        if z and qp:
            headline.append(
                f"Failover ({fault} zone a): zonal {z['errors_after']} errors, "
                f"{z['served_rate']:g} req/s answered while a was down, first success "
                f"{_fmt_s(z['first_ok'])}, p99 after the fault {_fmt_ms(z['p99_after'])}, "
                f"failback {_fmt_s(z['failback'])}; QueuePool + pre-ping (host=a,b): "
                f"{qp['errors_after']} errors, {qp['served_rate']:g} req/s while down, first "
                f"success {_fmt_s(qp['first_ok'])}, p99 {_fmt_ms(qp['p99_after'])}, failback "
                f"{_fmt_s(qp['failback'])}")
    notes = [
        f"{threads} clients with {think * 1e3:g} ms between requests; zone a killed "
        f"(SIGKILL of PostgreSQL and its PgBouncer) or paused (SIGSTOP) {pre:g} s in, "
        f"repaired (restart / SIGCONT) {after:g} s later; the run then goes on up to "
        f"{back_window:g} s for failback (traffic back on a: 20 requests in a row on a, "
        "over >= 1 s).",
        "zonal: zones={a, b}, local_zone=a, pre_ping, connect_timeout=2, query_timeout=2, "
        f"ping_timeout=1, failback_after={failback_after:g} (default 30; shortened so the "
        "run shows it). The others get what users have without zonal: a libpq multi-host "
        "string host=a,b with connect_timeout=2 and target_session_attrs=read-write; "
        "NullPool goes through each zone's PgBouncer.",
        "errors = failed requests started after the fault; first success = time from the "
        "fault to the end of the first successful request started after it; req/s while "
        "down = requests answered between the fault and the repair, per second; p99 after = "
        "over every request started after the fault (failed ones too); failback = time from "
        "the repair until traffic was back on zone a for good, '—' when it did not come back "
        "in the window, 'never left a' when the subject never served from b.",
        "libpq has no client-side bound on a query, so against a paused zone a pooled "
        "libpq connection waits until the server resumes: the pause rows of the others "
        "show requests that took as long as the pause.",
    ]
    return {
        "title": "4. Failover: local zone killed, and paused, mid-run",
        "what": "Two zones, a local; a steady workload while zone a dies or freezes, then "
                "comes back.",
        "columns": [["fault", "fault"], ["label", "subject"], ["requests", "requests"],
                    ["errors_after", "errors"], ["error_types", "error types"],
                    ["first_ok", "first success s"], ["served_rate", "req/s while down"],
                    ["p99_after", "p99 after ms"],
                    ["max_after", "max after ms"], ["served_b", "% on b after"],
                    ["failback", "failback s"], ["hung", "hung at end"],
                    ["verdict", "verdict"]],
        "rows": _failover_verdicts(rows), "headline": headline, "notes": notes,
        "plot": {"kind": "timeline", "runs": timelines},
    }


def _fmt_s(v: float | str | None) -> str:
    if isinstance(v, str):
        return v
    return "not within the window" if v is None else f"{v:.2f} s"


def _fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def _failover_row(run: Run, kind: str, label: str, fault: str, zone_of: dict[int, str],
                  released: bool) -> dict[str, Any]:
    fault_at = run.marks.get("fault", 0.0)
    restore_at = run.marks.get("restore", run.elapsed)
    after = run.between(fault_at)
    errs = [s for s in after if s.error]
    oks = [s.start + s.took for s in after if s.error is None]
    took = [s.took * 1e3 for s in after]
    # requests answered while the zone was down: what the application could still do
    answered = [s for s in run.samples if s.error is None
                and fault_at <= s.start + s.took < restore_at]
    window = max(1e-9, restore_at - fault_at)
    on_b = sum(1 for s in answered if zone_of.get(s.value) == "b")
    back = _sustained_local(run, restore_at, "a", zone_of, 20, 1.0)
    failback: float | str | None = "never left a" if not on_b else _r(
        None if back is None else back - restore_at, 2)
    return {
        "subject": kind, "label": label, "fault": fault, "requests": len(run.samples),
        "errors_after": len(errs),
        "error_types": ", ".join(sorted({s.error for s in errs if s.error})) or "—",
        "first_ok": _r(min(oks) - fault_at if oks else None, 3),
        "served_rate": _r(len(answered) / window, 0),
        "p99_after": _r(percentile(took, 99), 1),
        "max_after": _r(max(took) if took else None, 1),
        "served_b": _r(100 * on_b / len(answered) if answered else None, 1),
        "failback": failback,
        "hung": len(run.hung) if run.hung else 0,
        "released": released,
    }


def _failover_verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """zonal's rows say, per figure, whether the best of the others beat it."""
    checks = (("errors_after", "errors", False), ("first_ok", "first success", False),
              ("served_rate", "req/s while down", True), ("p99_after", "p99 after", False),
              ("failback", "failback", False))
    for fault in ("kill", "pause"):
        this = [r for r in rows if r.get("fault") == fault and "skipped" not in r]
        for z in (r for r in this if r["subject"] == "zonal"):
            others = [r for r in this if r["subject"] != "zonal"]
            lost, won = [], []
            for key, name, higher in checks:
                vals = [(r[key], r["label"]) for r in others
                        if isinstance(r.get(key), (int, float))]
                zv = z.get(key)
                if not vals or not isinstance(zv, (int, float)):
                    continue
                best, who = (max if higher else min)(vals, key=lambda v: v[0])
                margin = max(abs(best) * 0.05, 0.05 if key != "errors_after" else 0)
                if (best > zv + margin) if higher else (best < zv - margin):
                    lost.append(f"{name} ({who}: {best:g} vs {zv:g})")
                elif (zv > best + margin) if higher else (zv < best - margin):
                    won.append(name)
            # one run per subject and fault (a fault takes seconds to recover): no A/A
            # pair sizes the noise, so only a gap beyond 5% (0.05 s) is named at all
            z["verdict"] = "one run each: " + ("; ".join(
                ([f"zonal LOSES on {', '.join(lost)}"] if lost else [])
                + ([f"zonal wins on {', '.join(won)}"] if won else []))
                or "no gap beyond 5% on any figure")
    return rows


# -- 5. affinity --------------------------------------------------------------------


def affinity(ctx: Context) -> Result:
    seconds = ctx.pick(0.8, 3.0)
    rounds = ctx.pick(2, 4)
    threads, size, latency_ms = 4, 4, 20
    zone_of = ctx.zone_of_port()
    ctx.running_lab["b"].proxy.latency(ms=latency_ms)
    rows: list[dict[str, Any]] = []
    try:
        target = ctx.target(("a", "b"), proxy=True)
        btarget = ctx.target(("a", "b"), proxy=True, pgbouncer=True) if ctx.has_pgbouncer \
            else target
        variants: list[tuple[str, dict[str, Any], str]] = []
        for kind in ctx.subjects:
            if kind == "zonal":
                variants.append((kind, {}, "zones={a, b}, local_zone=a"))
            else:
                variants.append((kind, {"load_balance_hosts": "random", "connect_timeout": 2},
                                 "host=a,b load_balance_hosts=random"))
                if kind == "queuepool":
                    variants.append((kind, {"connect_timeout": 2}, "host=a,b in that order"))
        for kind, fo, how in variants:
            # fresh pools each round: where a pool's connections land is the point
            runs: list[Run] = []
            for rnd in range(rounds):
                tgt = btarget if kind == "nullpool" else target
                with _subject(kind, tgt, size=size, failover=fo) as s:
                    ctx.progress(f"affinity: {s.label} ({how}), {seconds:g} s, "
                                 f"round {rnd + 1}/{rounds}")
                    runs.append(_throughput(s, threads, seconds, "select inet_server_port()"))
            ok = [x for run in runs for x in run.ok()]
            local = sum(1 for x in ok if zone_of.get(x.value) == "a")
            lat = [x.took * 1e3 for x in ok]
            rows.append({"subject": kind, "label": label_of(kind), "how": how,
                         "rps": _r(median([run.throughput() for run in runs]), 0),
                         "p50": _r(percentile(lat, 50), 2),
                         "p99": _r(percentile(lat, 99), 2),
                         "local": _r(100 * local / len(ok) if ok else None, 1),
                         "errors": sum(len(run.errors()) for run in runs)})
    finally:
        ctx.running_lab["b"].proxy.heal()
    z = next((r for r in rows if r["subject"] == "zonal"), None)
    headline = []
    if z:
        for r in rows:
            if r is not z and r.get("p50"):
                r["z_ratio"] = _r(z["p50"] / r["p50"]) if z.get("p50") else None
        randoms = [r for r in rows if "random" in r["how"]]
        ordered = [r for r in rows if "in that order" in r["how"]]
        line = f"Affinity (remote zone +{latency_ms} ms): zonal p50 {z['p50']} ms, p99 " \
               f"{z['p99']} ms, {z['local']}% served locally"
        if randoms:
            line += "; zone-unaware host lists (random): " + ", ".join(
                f"{r['label']} p50 {r['p50']} / p99 {r['p99']} ms, {r['local']}% local"
                for r in randoms)
        if ordered:
            line += f"; an ordered host=a,b gets {ordered[0]['local']}% local too"
        headline.append(line)
        for r in rows:
            if r is z or r.get("p50") is None or z.get("p50") is None:
                continue
            parts = []
            for key in ("p50", "p99"):
                zv, rv = z.get(key), r.get(key)
                if zv is None or rv is None:
                    continue
                parts.append(f"zonal LOSES on {key}" if zv > rv * 1.05 else
                             f"even on {key}" if zv > rv * 0.95 else f"zonal wins on {key}")
            r["verdict"] = "; ".join(parts)
    notes = [
        f"Zone b sits behind the fault proxy with +{latency_ms} ms per round trip; zone a "
        "behind the same proxy with none. NullPool goes through each zone's PgBouncer.",
        _ROUND_TRIPS,
        "A connection in the remote zone answers about 20x slower, so it serves far fewer "
        "requests: '% local' per request understates how many connections landed remote; "
        "p99 shows them.",
        "Without zonal, a multi-zone endpoint (one DNS name or a host list with "
        "load_balance_hosts=random) puts each connection in a random zone; a host list "
        "written in local-first order also stays local, but then every zone's deployment "
        "needs its own URL, and it never fails back (see failover).",
    ]
    return {
        "title": f"5. Affinity: remote zone with +{latency_ms} ms",
        "what": f"`SELECT inet_server_port()`, {rounds} fresh pool(s) of {size} per subject, "
                f"{threads} threads, {seconds:g} s each: p50/p99 (ms) over all requests and "
                "the share served by the local zone a. verdict: this subject vs zonal (p50).",
        "columns": [["label", "subject"], ["how", "configured as"], ["rps", "req/s"],
                    ["p50", "p50 ms"], ["p99", "p99 ms"], ["local", "% local"],
                    ["errors", "errors"], ["z_ratio", "zonal p50 / this p50"],
                    ["verdict", "verdict (zonal vs this)"]],
        "rows": rows, "headline": headline, "notes": notes,
        "plot": {"kind": "bars", "ylabel": "p50 latency, ms (lower is better)",
                 "groups": [f"{r['label']}\n{r['how']}" for r in rows],
                 "series": {"p50 ms": [float(r["p50"] or 0) for r in rows]}},
    }


# -- 6. frozen instances and deploy storm --------------------------------------------


def serverless(ctx: Context) -> Result:
    """Frozen instances on this lab and a deploy storm on a small lab of its own
    (max_connections=30, fewer slots than instances), with the code of
    :mod:`zonal_lab.bench.serverless` (which ``tests/serverless`` asserts on). It
    measures zonal's serverless profile and QueuePool; the other subjects are not in it."""
    from zonal_lab import Lab
    from zonal_lab.bench import serverless as sv

    headline: list[str] = []
    columns = [["case", "case"], ["label", "subject"], ["instances", "instances"],
               ["held", "connections held"], ["held_later", "held after reaper"],
               ["failed", "requests failed"], ["drain_s", "drain s"], ["verdict", "verdict"]]
    k = ctx.pick(4, 12)
    n = ctx.pick(40, 60)
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    wanted = [p for p in ("zonal", "queuepool") if p in ctx.subjects]
    vias = [False, True] if ctx.has_pgbouncer else [False]
    for via in vias:
        where = "PgBouncer" if via else "direct"
        ctx.progress(f"serverless: {k} zonal + {k} QueuePool instances frozen after a "
                     f"burst ({where})")
        fr = sv.frozen_instances(ctx.running_lab, k=k, burst=ctx.pick(3, 5), via_pgbouncer=via,
                                 wait_for_reaper=not ctx.quick)
        raw[f"frozen_{where}"] = fr
        for pool in wanted:
            figs = fr.get(pool, {})
            held = figs.get("pgbouncer_clients_total" if via else "after_freeze_total")
            rows.append({"subject": pool, "label": label_of(pool), "case": f"frozen ({where})",
                         "instances": k, "held": held,
                         "held_later": figs.get("after_reaper_total"),
                         "failed": fr.get("request_errors")})
    with Lab(zones=["a"], server_settings={"max_connections": 30}) as small:
        for pool in wanted:
            ctx.progress(f"serverless: deploy storm, {n} fresh {label_of(pool)} instances, "
                         "one request each, max_connections=30")
            st = sv.deploy_storm(small, n=n, pool=pool)
            raw[f"storm_{pool}"] = st
            rows.append({"subject": pool, "label": label_of(pool), "case": "deploy storm",
                         "instances": n,
                         "held": st.get("connections_held_after",
                                        st.get("server_connections_held_after")),
                         "failed": st.get("failed"), "drain_s": st.get("drain_s")})
    for case in dict.fromkeys(r["case"] for r in rows):
        z = next((r for r in rows if r["case"] == case and r["subject"] == "zonal"), None)
        q = next((r for r in rows if r["case"] == case and r["subject"] == "queuepool"), None)
        if not (z and q):
            continue
        worse = [w for w, zv, qv in (("held", z.get("held"), q.get("held")),
                                      ("failed", z.get("failed"), q.get("failed")))
                 if zv is not None and qv is not None and zv > qv]
        better = [w for w, zv, qv in (("held", z.get("held"), q.get("held")),
                                       ("failed", z.get("failed"), q.get("failed")))
                  if zv is not None and qv is not None and zv < qv]
        z["verdict"] = ("zonal LOSES on " + ", ".join(worse)) if worse else (
            ("zonal wins on " + ", ".join(better)) if better else "even")
        headline.append(
            f"Serverless, {case}: zonal {z.get('held')} connections held, {z.get('failed')} "
            f"failed; QueuePool {q.get('held')} held, {q.get('failed')} failed")
    for kind in ctx.subjects:
        if kind not in wanted:
            rows.append(skip_row(kind, "this scenario measures zonal (serverless profile) "
                                    "and QueuePool only"))
    notes = [
        f"frozen: {k} instances of each pool serve a burst of concurrent requests through "
        "the request middleware, then all are SIGSTOPped; held = their connections on "
        "the server (direct) or at PgBouncer right after the freeze; held after reaper = "
        "once the server's idle_session_timeout that zonal's serverless profile asks for "
        "has fired (direct only).",
        f"deploy storm: {n} fresh instances each serve one 0.3 s transaction at the same "
        "moment against max_connections=30; zonal retries 'too many clients' with "
        "backoff inside its timeout (5 s).",
    ]
    return {"title": "6. Frozen instances and deploy storm",
            "what": "From zonal_lab.bench.serverless (real worker processes, frozen with "
                    "SIGSTOP).",
            "columns": columns, "rows": rows, "headline": headline, "notes": notes,
            "plot": None, "raw": raw}


# -- 7. memory ----------------------------------------------------------------------


def memory(ctx: Context) -> Result:
    size = 50
    rows: list[dict[str, Any]] = []
    for kind in ctx.subjects:
        target = ctx.target(("a",))
        ctx.progress(f"memory: {label_of(kind)}, {size} connections, in a new process")
        spec = {"kind": kind, "size": size, "target": dataclasses.asdict(target)}
        env = child_env(ZONAL_BENCH_MEMORY=json.dumps(spec))
        try:
            proc = subprocess.run([sys.executable, "-m", "zonal_lab.bench.memory"], env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            rows.append(skip_row(kind, "the measuring process did not finish in 120 s"))
            continue
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            rows.append(skip_row(kind, f"the measuring process failed: {last}"))
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        mb = 1 / (1 << 20)
        rows.append({"subject": kind, "label": label_of(kind),
                     "base": _r(m["base"] * mb, 1), "held": _r(m["held"] * mb, 1),
                     "idle": _r(m["idle"] * mb, 1), "delta": _r((m["held"] - m["base"]) * mb, 1),
                     "per_conn": _r((m["held"] - m["base"]) / size / 1024, 1),
                     "open_idle": m.get("open_idle")})
    qp = next((r for r in rows if r["subject"] == "queuepool" and "delta" in r), None)
    z = next((r for r in rows if r["subject"] == "zonal" and "delta" in r), None)
    for r in rows:
        if qp and "delta" in r and qp["delta"]:
            r["vs_qp"] = _r(r["delta"] / qp["delta"])
    headline = []
    if z:
        line = f"Memory, {size} connections: zonal +{z['delta']} MB over the bare process " \
               f"({z['held']} MB RSS)"
        if qp:
            line += f"; QueuePool +{qp['delta']} MB ({qp['held']} MB): {z['vs_qp']:.2f}x"
            z["verdict"] = _verdict(z["vs_qp"], higher_is_better=False, peer="QueuePool")
        headline.append(line)
    return {
        "title": f"7. Memory: a process holding {size} connections",
        "what": f"Resident memory (MB, psutil) of a fresh Python process: after importing "
                f"the subject's libraries (base), with {size} connections checked out at "
                f"once (held), after giving them back (idle: the pool keeps them open, "
                "NullPool closes them). delta = held - base; KB/conn = delta / "
                f"{size}.",
        "columns": [["label", "subject"], ["base", "base MB"], ["held", "held MB"],
                    ["idle", "idle MB"], ["delta", "delta MB"], ["per_conn", "KB/conn"],
                    ["vs_qp", "delta vs QP"], ["verdict", "verdict"]],
        "rows": rows, "headline": headline,
        "notes": ["Every subject connects straight to PostgreSQL here (the client's memory "
                  "does not depend on what answers; 50 connections each inside a "
                  "transaction would need 50 server connections behind PgBouncer in "
                  "transaction mode). NullPool closes its connections at checkin, so it "
                  "holds none when idle."],
        "plot": {"kind": "bars", "ylabel": f"MB RSS with {size} connections (lower is better)",
                 "groups": [r["label"] for r in rows if "held" in r],
                 "series": {"base": [r["base"] for r in rows if "held" in r],
                            "held": [r["held"] for r in rows if "held" in r]}},
    }


# -- 8. request shapes: no SQLAlchemy, against a ceiling ------------------------------

_PAIRS = (("zonal_django", "django_pool"), ("zonal_core", "psycopg_pool_autocommit"))
"""(zonal's subject, the peer it is judged against): the same request shape each."""
_CEILING = "raw_psycopg"
_AA = ("zonal_core", "zonal_core_aa")  # the core measured as two subjects


def request_shapes(ctx: Context) -> Result:
    """Autocommit ``SELECT 1`` with no SQLAlchemy: zonal_django beside Django's native
    pool, the core with its psycopg driver beside psycopg_pool, and the ceiling (a raw
    connection per thread, no pool). Every subject of a thread count is built once,
    then measured in interleaved rounds (the order rotating each round)."""
    from zonal_lab.bench.subjects import missing

    # ctx.extras may shorten it (a smoke test): seconds, rounds, threads
    seconds = float(ctx.extras.get("seconds", ctx.pick(0.3, 1.0)))
    rounds = int(ctx.extras.get("rounds", ctx.pick(5, 7)))
    thread_counts: tuple[int, ...] = tuple(ctx.extras.get("threads",
                                                          ctx.pick((4, 16), (4, 16, 64))))
    size = 16
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    members: list[tuple[str, str]] = []  # (row name, subject kind)
    for z, peer in _PAIRS:
        why = missing(z) or missing(peer)
        if why is not None:
            for k in (z, peer):
                rows.append(skip_row(k, f"the pair {label_of(z)} / {label_of(peer)} needs "
                                        f"it: {why}"))
            continue
        members += [(z, z), (peer, peer)]
    why = missing("zonal_core") or missing(_CEILING)
    if why is not None:
        rows.append(skip_row(_CEILING, why))
    else:
        if ("zonal_core", "zonal_core") not in members:
            members.append(("zonal_core", "zonal_core"))
        members += [(_AA[1], "zonal_core"), (_CEILING, _CEILING)]
    labels = {name: label_of(kind) + (" again (A/A)" if name == _AA[1] else "")
              for name, kind in members}
    names = [n for n, _ in members]
    target = ctx.target(("a",))
    groups: list[str] = []
    series: dict[str, list[float]] = {labels[n]: [] for n in names}
    headline: list[str] = []
    for threads in thread_counts if members else ():
        rps: dict[str, list[float]] = {n: [] for n in names}
        errs: dict[str, int] = dict.fromkeys(names, 0)
        with contextlib.ExitStack() as stack:
            built: dict[str, Subject] = {}
            for name, kind in members:
                s = stack.enter_context(_subject(kind, target, size=size))
                s.prefill(threads if kind == _CEILING else min(threads, size))
                run_workload(s.query, threads=threads, duration=min(0.2, seconds),
                             max_requests=2_000)  # warm: caches filled
                built[name] = s
            for rnd in range(rounds):
                ctx.progress(f"request shapes: {threads} threads, round {rnd + 1}/{rounds}, "
                             f"{len(names)} subjects x {seconds:g} s")
                for name in rotated(names, rnd):
                    run = run_workload(built[name].query, threads=threads, duration=seconds,
                                       max_requests=2_000_000)
                    rps[name].append(run.throughput())
                    errs[name] += len(run.errors())
        med = {n: median(v) or 0.0 for n, v in rps.items()}
        ceiling = med.get(_CEILING) or None
        aa = _per_round(rps[_AA[1]], rps[_AA[0]]) if _AA[1] in rps else []
        noise = _aa_noise(aa)
        cell: dict[str, dict[str, Any]] = {}
        for name, kind in members:
            cell[name] = {"subject": name, "label": labels[name], "threads": threads,
                          "size": None if kind == _CEILING else size,
                          "rps": _r(med[name], 0), "spread": _spread(rps[name]),
                          "eff": _r(100 * med[name] / ceiling, 1) if ceiling else None,
                          "errors": errs[name], "rounds": [round(v) for v in rps[name]]}
        parts: list[str] = []
        for z, peer in _PAIRS:
            if z in cell and peer in cell and med[peer]:
                ratio = med[z] / med[peer]
                cell[z]["vs"] = _r(ratio)
                cell[z]["target"] = ">= 1.0x"
                cell[z]["verdict"] = _target(
                    ratio, 1.0, higher_is_better=True,
                    why=MISSED_BECAUSE[("request_shapes" if z == "zonal_django" else "core")
                                       + ("_saturated" if threads > size else "")],
                ) + "; " + _judge(ratio, _per_round(rps[z], rps[peer]), aa,
                                  higher_is_better=True, peer=label_of(peer))
                parts.append(f"{label_of(z)} {ratio:.2f}x {label_of(peer)} "
                             f"({cell[z]['eff']}% vs {cell[peer]['eff']}% of the ceiling)")
            elif z in cell and peer in cell:
                cell[z]["verdict"] = (f"not judged: {label_of(peer)} completed no request "
                                      "in most rounds (a measure too short for this machine)")
        if _AA[1] in cell:
            if med[_AA[0]]:
                cell[_AA[1]]["vs"] = _r(med[_AA[1]] / med[_AA[0]])
            cell[_AA[1]]["verdict"] = (f"A/A: per-round spread ±{noise:.0%}"
                                       if noise is not None else "A/A: no round to compare")
        if _CEILING in cell:
            cell[_CEILING]["verdict"] = "the ceiling: a connection per thread, no pool"
        rows.extend(cell.values())
        if parts:
            headline.append(f"Request shapes, {threads} threads: " + "; ".join(parts)
                            + (f"; A/A spread ±{noise:.0%}" if noise is not None else ""))
        groups.append(f"{threads} threads")
        for n in names:
            series[labels[n]].append(med[n])
    for kind in ctx.subjects:
        if kind not in names and not any(r["subject"] == kind for r in rows):
            rows.append(skip_row(kind, "not in this scenario (autocommit SELECT 1 without "
                                       "SQLAlchemy; SQLAlchemy's pools are in throughput)"))
    notes.append(
        "Each request is what a view or a handler does in autocommit: check out, one "
        "`SELECT 1` (one round trip, no BEGIN/COMMIT), give back. Django subjects: the "
        "thread's connection, a cursor, then connection.close() (the request's end); "
        "the core: CorePool.connection() over PsycopgDriver(autocommit=True); "
        "psycopg_pool: pool.connection() with autocommit connections; the ceiling: "
        "conn.execute on the thread's own connection, opened once.")
    notes.append(
        f"Pools of {size} connections (Django's and psycopg_pool's max_size, zonal's "
        "pool_size); the ceiling holds one connection per thread. efficiency = req/s / "
        "the ceiling's req/s at the same thread count.")
    notes.append(
        "A/A: the core built twice and measured as two subjects in the same rounds; its "
        "spread is the largest per-round gap between the two. A verdict says whether a "
        "pair's gap (ratio of medians) exceeds that spread, or else whether every round "
        "puts zonal on the same side (a sign test).")
    return {
        "title": "8. Request shapes: autocommit SELECT 1 without SQLAlchemy, vs a ceiling",
        "what": f"req/s of an autocommit `SELECT 1` per request, zone a direct, "
                f"{', '.join(map(str, thread_counts))} threads, {seconds:g} s per measure, "
                f"median of {rounds} interleaved rounds (min-max of the rounds beside it).",
        "columns": [["threads", "threads"], ["label", "subject"], ["size", "pool size"],
                    ["rps", "req/s"], ["spread", "min-max req/s"],
                    ["eff", "% of ceiling"], ["vs", "vs peer"], ["errors", "errors"],
                    ["target", "target"], ["verdict", "verdict"]],
        "rows": rows, "headline": headline, "notes": notes,
        "plot": {"kind": "bars", "ylabel": "SELECT 1 per second (higher is better)",
                 "groups": groups, "series": series} if groups else None,
    }


@dataclass(frozen=True)
class Scenario:
    """One entry of :data:`SCENARIOS`."""

    name: str
    run: Callable[[Context], Result]
    needs_lab: bool
    help: str
    needs: tuple[Need, ...] = ()

    def missing(self) -> str | None:
        """Why this scenario cannot run here (a library is not installed), or None."""
        return next((p for p in (n.problem() for n in self.needs) if p is not None), None)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("overhead", overhead, False, "checkout + checkin on a fake driver, vs QueuePool"),
    Scenario("preping", preping, True, "SELECT 1 throughput with pre-ping off and on"),
    Scenario("throughput", throughput, True, "req/s and latency, 4-64 threads, direct and "
             "through PgBouncer"),
    Scenario("failover", failover, True, "the local zone killed, then paused, mid-run"),
    Scenario("affinity", affinity, True, "a remote zone 20 ms away: who stays local"),
    Scenario("serverless", serverless, True, "frozen instances and a deploy storm"),
    Scenario("memory", memory, True, "RSS of a process holding 50 connections",
             (Need("psutil", "psutil", "'zonal[bench]'"),)),
    Scenario("request_shapes", request_shapes, True, "autocommit SELECT 1 without "
             "SQLAlchemy: zonal_django vs Django's pool, zonal core vs psycopg_pool, vs "
             "a raw connection per thread (the ceiling)"),
)}
"""Every scenario ``zonal bench --scenarios`` knows, in the order they run: the one
list of names."""

NAMES = tuple(SCENARIOS)
