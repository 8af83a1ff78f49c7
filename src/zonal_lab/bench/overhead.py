"""Checkout plus checkin with a fake driver: zonal's core vs SQLAlchemy's QueuePool.

Both pools get a connection that costs nothing, so what is measured is the pool's
own bookkeeping. Figures are medians of several rounds, in microseconds per
checkout+checkin, and the ratio to QueuePool measured in the same run.

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

from zonal_core.pool import ZonedPool
from zonal_core.testing import FakeDriver

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


def _zonal_cycle(pool_size: int) -> tuple[Callable[[], None], Any]:
    pool = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, pool_size=pool_size)
    getconn, putconn = pool.getconn, pool.putconn

    def cycle() -> None:
        putconn(getconn())

    return cycle, pool


SUBJECTS: dict[str, Callable[[int], tuple[Callable[[], None], Any]]] = {
    "queuepool": _queuepool_cycle,
    "zonal": _zonal_cycle,
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


def measure(threads: int, ops: int, rounds: int = 5) -> dict[str, float]:
    """Median µs per checkout+checkin per subject; rounds interleave subjects."""
    samples: dict[str, list[float]] = {name: [] for name in SUBJECTS}
    made = {name: make(max(threads, 4)) for name, make in SUBJECTS.items()}
    for cycle, _ in made.values():
        _run(cycle, threads, ops // 10)  # warm up
    for _ in range(rounds):
        for name, (cycle, _) in made.items():
            samples[name].append(_run(cycle, threads, ops) * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


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
        res["ratio"] = res["zonal"] / res["queuepool"]
        results[f"{n}_threads"] = res
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(f"{'threads':>8} {'queuepool µs':>13} {'zonal µs':>9} {'ratio':>6}")
        for key, r in results.items():
            print(f"{key.split('_')[0]:>8} {r['queuepool']:>13.2f} {r['zonal']:>9.2f} "
                  f"{r['ratio']:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
