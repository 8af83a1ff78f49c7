"""Resident memory of a process holding a pool of N connections (run in a child).

    python -m zonal_lab.bench.memory

The parent (:func:`zonal_lab.bench.scenarios.memory`) passes what to build in
``ZONAL_BENCH_MEMORY`` (JSON: kind, size, target; the environment keeps the
password off the command line) and reads one JSON line from stdout: RSS in bytes
after the imports (``base``), with every connection checked out (``held``), after
giving them back (``idle``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def main() -> int:
    spec = json.loads(os.environ["ZONAL_BENCH_MEMORY"])
    kind, size = spec["kind"], int(spec["size"])
    from zonal_lab.bench.subjects import BenchDatabase, make_subject

    target = BenchDatabase(**spec["target"])
    # import what the subject needs before the baseline, so delta is the pool's
    subject = make_subject(kind, target, size=size)
    subject.query("select 1")
    # one thread per connection: Django hands out one connection per thread
    go, release = threading.Event(), threading.Event()
    ready = threading.Semaphore(0)
    errors: list[str] = []

    def hold() -> None:
        go.wait(60)
        try:
            with subject.checkout() as run:
                run("select 1")
                ready.release()
                release.wait(60)
        except Exception as exc:
            errors.append(type(exc).__name__)
            ready.release()

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(size)]
    for t in threads:
        t.start()
    base = _rss()
    go.set()
    for _ in range(size):
        if not ready.acquire(timeout=60):
            raise SystemExit("connections not all checked out within 60 s")
    held = _rss()
    release.set()
    for t in threads:
        t.join(30)
    idle = _rss()
    subject.close()
    if errors:
        raise SystemExit(f"{len(errors)} checkouts failed: {sorted(set(errors))}")
    print(json.dumps({"base": base, "held": held, "idle": idle}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
