"""Checkout plus checkin with a fake driver: zonal's core container
(``CorePool.getconn``/``putconn``), ``ZonalPool`` through SQLAlchemy's pool API
(``pool.connect()``/``close()``) and SQLAlchemy's QueuePool through the same API.

Every pool gets a connection that costs nothing, so what is measured is the pool's
own bookkeeping. Figures are medians of several interleaved rounds, in microseconds
per checkout+checkin, with each round's figure kept (the spread), and the ratio to
QueuePool measured in the same run. The core is measured twice, as two subjects
(``zonal_core`` and ``zonal_core_aa``, an A/A pair): their ratio is the noise of the
measure, against which the other ratios are judged.

    python -m zonal_lab.bench.overhead [--threads 1 4] [--ops 200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from zonal_core.pool import CorePool
from zonal_core.testing import FakeDriver
from zonal_lab.bench.workload import rotated

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection


class _FakeDBAPIConnection:
    """What QueuePool's creator returns: enough for reset-on-return."""

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def _queuepool_cycle(pool_size: int) -> tuple[Callable[[], None], Any]:
    from sqlalchemy.pool import QueuePool

    def creator() -> DBAPIConnection:
        return cast("DBAPIConnection", _FakeDBAPIConnection())

    pool = QueuePool(creator, pool_size=pool_size, max_overflow=0, timeout=30)

    def cycle() -> None:
        pool.connect().close()

    return cycle, pool


def _zonal_core_cycle(pool_size: int) -> tuple[Callable[[], None], Any]:
    pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, pool_size=pool_size)
    getconn, putconn = pool.getconn, pool.putconn

    def cycle() -> None:
        putconn(getconn())

    return cycle, pool


def _zonalpool_cycle(pool_size: int) -> tuple[Callable[[], None], Any]:
    from zonal_sqlalchemy import ZonalPool

    def creator(endpoint: Any) -> DBAPIConnection:
        return cast("DBAPIConnection", _FakeDBAPIConnection())

    pool = ZonalPool(creator, zones={"a": "10.0.0.1:5432"}, pool_size=pool_size, timeout=30)

    def cycle() -> None:
        pool.connect().close()

    return cycle, pool


SUBJECTS: dict[str, Callable[[int], tuple[Callable[[], None], Any]]] = {
    "zonal_core": _zonal_core_cycle,
    "zonal_core_aa": _zonal_core_cycle,
    "zonalpool": _zonalpool_cycle,
    "queuepool": _queuepool_cycle,
}
"""What is timed, by name; ``zonal_core_aa`` is the core again (the A/A pair)."""

LABELS = {
    "zonal_core": "zonal core (CorePool.getconn/putconn)",
    "zonal_core_aa": "zonal core again (A/A)",
    "zonalpool": "ZonalPool (SQLAlchemy pool.connect/close)",
    "queuepool": "QueuePool (SQLAlchemy pool.connect/close)",
}


def _run(cycle: Callable[[], None], threads: int, ops: int) -> float:
    """Seconds per cycle, over ``ops`` cycles split across ``threads``."""
    per = ops // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per):
            cycle()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return (time.perf_counter() - t0) / (per * threads)


def measure_rounds(threads: int, ops: int, rounds: int = 5) -> dict[str, list[float]]:
    """µs per checkout+checkin per subject, one figure per round. Rounds interleave
    the subjects, and each round starts with a different one (A B C D, B C D A, ...),
    so a drift of the machine hits every subject alike."""
    samples: dict[str, list[float]] = {name: [] for name in SUBJECTS}
    made = {name: make(max(threads, 4)) for name, make in SUBJECTS.items()}
    names = list(made)
    for cycle, _ in made.values():
        _run(cycle, threads, ops // 10)  # warm up
    for rnd in range(rounds):
        for name in rotated(names, rnd):
            samples[name].append(_run(made[name][0], threads, ops) * 1e6)
    return samples


def measure(threads: int, ops: int, rounds: int = 5) -> dict[str, float]:
    """Median µs per checkout+checkin per subject (see :func:`measure_rounds`)."""
    return {name: statistics.median(v)
            for name, v in measure_rounds(threads, ops, rounds).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = {}
    for n in args.threads:
        res = measure(n, args.ops, args.rounds)
        res["zonal_core_ratio"] = res["zonal_core"] / res["queuepool"]
        res["zonalpool_ratio"] = res["zonalpool"] / res["queuepool"]
        res["aa_ratio"] = res["zonal_core_aa"] / res["zonal_core"]
        results[f"{n}_threads"] = res
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(f"{'threads':>8} " + " ".join(f"{n + ' µs':>16}" for n in SUBJECTS)
              + f" {'core/QP':>8} {'ZonalPool/QP':>13} {'A/A':>6}")
        for key, r in results.items():
            print(f"{key.split('_')[0]:>8} " + " ".join(f"{r[n]:>16.2f}" for n in SUBJECTS)
                  + f" {r['zonal_core_ratio']:>7.2f}x {r['zonalpool_ratio']:>12.2f}x"
                  f" {r['aa_ratio']:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
