"""Where a request's time goes: CPU per request, and the parts each pool adds.

    python -m zonal_lab.bench.breakdown [--requests 3000] [--rounds 5]

Starts a one-zone lab and measures on one thread, so that a figure is the request's
own work (nothing waits for a lock, the GIL or another thread):

1. CPU µs per request of every subject of the request_shapes scenario and of the
   SQLAlchemy pair (ZonalPool, QueuePool), user and system (the thread's
   ``getrusage``), median of interleaved rounds (each round in a new order) with the
   rounds' min-max of the total;
2. the Django pair's parts: a connection cycle without a query (``connect()`` then
   ``close()``: the checkout and the checkin as Django drives them), the same on a
   new wrapper (what a new thread's first request does: Django keeps one per thread),
   ``init_connection_state()``, and zonal_django's own plan check and pool lookup;
3. the pools' own share of a SQLAlchemy checkout over a fake DBAPI
   (``pool._do_get()`` + ``pool._do_return_conn()``): ZonalPool against QueuePool;
4. the same connection again or another: raw psycopg sending each request on one
   connection, or in turn on 4 (µs of CPU, user and system, and of wall time per
   request), and the core and psycopg_pool each with a pool of one connection. A
   pool that hands out the connection used last (zonal: LIFO, so that the others age
   out) sends the next request to a server process that has just answered; one that
   rotates (psycopg_pool: FIFO) sends it to one that has been idle longer. On a
   server on the same machine the two cost the client different kernel time.

5. Python bytecodes per request of each pair (zonal_django and Django's pool, ZonalPool
   and QueuePool, the core and psycopg_pool), counted by a ``sys.settrace`` opcode
   hook over a few requests: the Python work of a request, by package, and the
   functions where the pair differs most. A count, not a time: the same on a busy
   machine as on an idle one (what runs in C, the driver's and the kernel's, is not in
   it).

Under the GIL the CPU time of a request bounds what every thread together can do, so
these are the causes behind the req/s ratios of ``zonal bench``. (2) and (3) are
``timeit`` minima: the least the machine took, the figure least moved by other work.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from zonal_lab.bench.subjects import BenchDatabase, Subject, _django_factory, label, make_subject
from zonal_lab.bench.subjects import missing as missing_subject
from zonal_lab.bench.workload import rotated

CPU_SUBJECTS = ("zonal_django", "django_pool", "zonal_core", "psycopg_pool_autocommit",
                "raw_psycopg", "zonal", "queuepool")
"""The subjects whose CPU per request is measured (those installed)."""


def _min_us(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """The fastest of ``repeat`` timings of ``number`` calls, µs per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of the calling thread."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    if who is None:  # pragma: no cover - not Linux: no split
        return time.thread_time(), 0.0
    r = resource.getrusage(who)
    return r.ru_utime, r.ru_stime


def cpu_per_request(subjects: dict[str, Callable[[], object]], requests: int, rounds: int
                    ) -> dict[str, list[tuple[float, float, float]]]:
    """(user, system, wall) µs per request of each request function, one triple per
    round (see the module)."""
    names = list(subjects)
    out: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    for rnd in range(rounds):
        for name in rotated(names, rnd):
            query = subjects[name]
            u0, s0 = _cpu()
            w0 = time.perf_counter()
            for _ in range(requests):
                query()
            w1 = time.perf_counter()
            u1, s1 = _cpu()
            out[name].append(((u1 - u0) / requests * 1e6, (s1 - s0) / requests * 1e6,
                              (w1 - w0) / requests * 1e6))
    return out


def _summary(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    totals = [u + s for u, s, _ in samples]
    return {"median": statistics.median(totals), "rounds": totals,
            "user": statistics.median(u for u, _, _ in samples),
            "sys": statistics.median(s for _, s, _ in samples),
            "wall": statistics.median(w for _, _, w in samples)}


def same_or_another(target: BenchDatabase, requests: int, rounds: int) -> dict[str, Any]:
    """Section 4 of the module: one connection again, or in turn (see there)."""
    import psycopg

    conns = [psycopg.connect(target.conninfo(), autocommit=True) for _ in range(4)]
    one: dict[str, Subject] = {}
    try:
        for kind in ("zonal_core", "psycopg_pool_autocommit"):
            if missing_subject(kind) is None:
                one[kind] = make_subject(kind, target, size=1)
        turn = iter(range(1 << 62))

        def run(conn: Any) -> None:
            conn.execute("select 1").fetchone()

        fns: dict[str, Callable[[], object]] = {
            "raw psycopg, the same connection every request": lambda: run(conns[0]),
            "raw psycopg, 4 connections in turn": lambda: run(conns[next(turn) % 4]),
            **{f"{label(k)}, pool of 1": s.query for k, s in one.items()},
        }
        for fn in fns.values():
            for _ in range(min(300, requests)):
                fn()
        samples = cpu_per_request(fns, requests, rounds)
    finally:
        for s in one.values():
            s.close()
        for conn in conns:
            conn.close()
    return {name: _summary(v) for name, v in samples.items()}


STEP_PAIRS = (("zonal_django", "django_pool"), ("zonal", "queuepool"),
              ("zonal_core", "psycopg_pool_autocommit"))
"""Section 5's pairs: zonal's subject, then its peer."""
STEP_REQUESTS = 50


def _part(filename: str) -> str:
    """The package a code object's file belongs to (section 5's split)."""
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for name in ("zonal_core", "zonal_django", "zonal_sqlalchemy", "zonal_lab"):
        if f"/{name}/" in path:
            return name
    return "python (stdlib)"


def python_steps(query: Callable[[], object], requests: int) -> dict[str, Any]:
    """Bytecodes executed per request of ``query``: total, by package, by function."""
    counts: dict[Any, int] = {}

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[code] = counts.get(code, 0) + 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(requests):
            query()
    finally:
        sys.settrace(None)
    by_part: dict[str, float] = {}
    by_function: dict[str, float] = {}
    for code, n in counts.items():
        part = _part(code.co_filename)
        by_part[part] = by_part.get(part, 0) + n / requests
        name = f"{part}: {code.co_qualname}"
        by_function[name] = by_function.get(name, 0) + n / requests
    return {"total": sum(by_part.values()), "parts": by_part, "functions": by_function}


def steps_of_pairs(subjects: dict[str, Subject], requests: int) -> list[dict[str, Any]]:
    """Section 5: each pair's bytecodes per request and where they differ most."""
    out = []
    for ours, peer in STEP_PAIRS:
        if ours not in subjects or peer not in subjects:
            continue
        a = python_steps(subjects[ours].query, requests)
        b = python_steps(subjects[peer].query, requests)
        names = set(a["functions"]) | set(b["functions"])
        differ = sorted(names, key=lambda n: -abs(a["functions"].get(n, 0)
                                                   - b["functions"].get(n, 0)))[:8]
        out.append({"ours": label(ours), "peer": label(peer), "requests": requests,
                    "total": [a["total"], b["total"]],
                    "parts": {p: [a["parts"].get(p, 0), b["parts"].get(p, 0)]
                              for p in sorted(set(a["parts"]) | set(b["parts"]))},
                    "differ": {n: [a["functions"].get(n, 0), b["functions"].get(n, 0)]
                               for n in differ}})
    return out


def django_parts(target: BenchDatabase, number: int) -> dict[str, float]:
    """µs of the Django pair's connection cycle and of zonal_django's checks."""
    from zonal_django import pools

    out: dict[str, float] = {}
    for kind in ("zonal_django", "django_pool"):
        new = _django_factory(kind, target, size=4)
        w: Any = new()

        def cycle(w: Any = w) -> None:
            w.connect()
            w.close()

        def first(new: Callable[[], Any] = new) -> None:
            fresh = new()  # (what Django makes for a new thread)
            fresh.connect()
            fresh.close()

        try:
            cycle()
            out[f"{kind}: connect() + close()"] = _min_us(cycle, number)
            out[f"{kind}: a new thread's wrapper: connect() + close()"] = _min_us(
                first, max(100, number // 10))
            w.connect()
            out[f"{kind}: init_connection_state()"] = _min_us(w.init_connection_state, number)
            if kind == "zonal_django":
                params = w.get_connection_params()
                plan = w.zonal_plan(params)
                out[f"{kind}: plan check (settings, time zone, params, env)"] = _min_us(
                    lambda: w.zonal_plan(params), number)  # noqa: B023 (called at once)

                def lookup(w: Any = w, plan: Any = plan, params: Any = params) -> None:
                    pools.get_pool(w.alias, plan.fingerprint, _built_already, plan, params)

                out[f"{kind}: pool lookup"] = _min_us(lookup, number)
            w.close()
        finally:
            w.close_pool()
    return out


def _built_already(*args: Any) -> Any:
    raise AssertionError("the pool lookup timed here finds the pool the connect built")


def pool_parts(number: int) -> dict[str, float]:
    """µs of ``_do_get`` + ``_do_return_conn`` (the pool's own share of a SQLAlchemy
    checkout and checkin), and of the whole ``pool.connect().close()``."""
    from zonal_lab.bench.overhead import _queuepool_cycle, _zonalpool_cycle

    out: dict[str, float] = {}
    for name, make in (("ZonalPool", _zonalpool_cycle), ("QueuePool", _queuepool_cycle)):
        cycle, pool = make(4)
        cycle()

        def own(pool: Any = pool) -> None:
            pool._do_return_conn(pool._do_get())

        out[f"{name}: _do_get + _do_return_conn"] = _min_us(own, number)
        out[f"{name}: pool.connect().close()"] = _min_us(cycle, number)
    return out


def measure(requests: int, rounds: int) -> dict[str, Any]:
    """Every figure of the module docstring, as a dict (JSON-ready)."""
    from zonal_lab import Lab

    result: dict[str, Any] = {"requests": requests, "rounds": rounds, "cpu_us": {},
                              "skipped": {}}
    with Lab(zones=["a"]) as lab:
        eps = lab.zones(pgbouncer=False, proxy=False)
        target = BenchDatabase(lab.user, lab.password, lab.database, {"a": eps["a"]})
        subjects: dict[str, Subject] = {}
        try:
            for kind in CPU_SUBJECTS:
                why = missing_subject(kind)
                if why is not None:
                    result["skipped"][kind] = why
                    continue
                subjects[kind] = s = make_subject(kind, target, size=4)
                for _ in range(min(300, requests)):  # warm: caches, prepared paths
                    s.query()
            samples = cpu_per_request({k: s.query for k, s in subjects.items()},
                                      requests, rounds)
            result["steps"] = steps_of_pairs(subjects, STEP_REQUESTS)
        finally:
            for s in subjects.values():
                s.close()
        for kind, v in samples.items():
            result["cpu_us"][kind] = {"label": label(kind), **_summary(v)}
        number = max(1000, requests)
        if "zonal_django" in subjects and "django_pool" in subjects:
            result["django_us"] = django_parts(target, number)
        result["reuse_us"] = same_or_another(target, requests, rounds)
    if "zonal" in subjects and "queuepool" in subjects:
        result["pool_us"] = pool_parts(number * 10)
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"1. CPU µs per request, 1 thread, {result['requests']} requests x "
             f"{result['rounds']} interleaved rounds (median: total = user + system, "
             "min-max of the total)"]
    for r in result["cpu_us"].values():
        lines.append(f"   {r['label']:<48} {r['median']:7.1f} = {r['user']:5.1f} + "
                     f"{r['sys']:5.1f}   {min(r['rounds']):.1f}..{max(r['rounds']):.1f}")
    for kind, why in result["skipped"].items():
        lines.append(f"   {label(kind):<48} not measured: {why}")
    for title, key in (("2. Django, µs (timeit minimum)", "django_us"),
                       ("3. SQLAlchemy pool's own share, fake DBAPI, µs (timeit minimum)",
                        "pool_us")):
        if key in result:
            lines.append(title)
            lines += [f"   {name:<64} {us:7.2f}" for name, us in result[key].items()]
    if "reuse_us" in result:
        lines.append("4. The same connection again, or another: µs per request, 1 thread "
                     "(median: CPU total = user + system; wall)")
        for name, r in result["reuse_us"].items():
            lines.append(f"   {name:<58} {r['median']:7.1f} = {r['user']:5.1f} + "
                         f"{r['sys']:5.1f}   wall {r['wall']:6.1f}")
    if result.get("steps"):
        lines.append("5. Python bytecodes per request (sys.settrace opcode count, "
                     f"{result['steps'][0]['requests']} requests; zonal's subject, its "
                     "peer, difference)")
    for pair in result.get("steps", []):
        (ours, peer), (a, b) = (pair["ours"], pair["peer"]), pair["total"]
        lines.append(f"   {ours} vs {peer}: {a:.0f} vs {b:.0f} ({a / b:.3f}x)")
        for name, (x, y) in pair["parts"].items():
            lines.append(f"     {name:<56} {x:7.0f} {y:7.0f} {x - y:+7.0f}")
        lines.append("     most different functions:")
        for name, (x, y) in pair["differ"].items():
            lines.append(f"     {name[:56]:<56} {x:7.0f} {y:7.0f} {x - y:+7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = measure(args.requests, args.rounds)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
