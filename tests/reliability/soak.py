"""The chaos soak's bookkeeping, shared by the SQLAlchemy writers (in the test
process) and the Django writers (in a process of their own, ``soak_django.py``).

A writer inserts a row with a unique key, reads it back in the same transaction,
commits, then reads it back through the pool. What it learns goes in a
:class:`Ledger`:

- ``acked``: the commit returned; the key *must* be in the zone that served it
  (zones are separate servers, not replicas), once, and nowhere else;
- ``aborted``: failed before COMMIT was sent; the key must be nowhere;
- ``unknown``: COMMIT was sent and failed; the key is in that zone at most once;
- ``errors``: every error the application saw, by documented kind; anything else
  goes to ``undocumented`` (with its message) and fails the soak.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TABLE = "soak"
DDL = (f"DROP TABLE IF EXISTS {TABLE}; "
       f"CREATE TABLE {TABLE} (id bigserial, key text NOT NULL, at timestamptz DEFAULT now())")
INSERT_SQL = f"INSERT INTO {TABLE} (key) VALUES (%s) RETURNING inet_server_port()"
COUNT_SQL = f"SELECT inet_server_port(), count(*) FROM {TABLE} WHERE key = %s"
PAUSE = 0.01  # seconds between two units of work of one writer


@dataclass
class Ledger:
    acked: dict[str, int] = field(default_factory=dict)  # key -> server port
    aborted: set[str] = field(default_factory=set)
    unknown: dict[str, int | None] = field(default_factory=dict)  # key -> port if known
    errors: Counter[str] = field(default_factory=Counter)
    undocumented: list[str] = field(default_factory=list)
    readback_bad: list[str] = field(default_factory=list)
    reads: Counter[str] = field(default_factory=Counter)  # same zone / elsewhere
    slowest: float = 0.0
    hung: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"acked": self.acked, "aborted": sorted(self.aborted), "unknown": self.unknown,
                "errors": dict(self.errors), "undocumented": self.undocumented,
                "readback_bad": self.readback_bad, "reads": dict(self.reads),
                "slowest": self.slowest, "hung": self.hung}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        return cls(acked=dict(data["acked"]), aborted=set(data["aborted"]),
                   unknown=dict(data["unknown"]), errors=Counter(data["errors"]),
                   undocumented=list(data["undocumented"]),
                   readback_bad=list(data["readback_bad"]), reads=Counter(data["reads"]),
                   slowest=float(data["slowest"]), hung=int(data["hung"]))


class Unit:
    """One unit of work's progress: which phase it reached, which server it used."""

    __slots__ = ("phase", "port")

    def __init__(self) -> None:
        self.phase = "checkout"  # checkout -> insert -> commit
        self.port: int | None = None


def writer(ledger: Ledger, prefix: str, deadline: float,
           write: Callable[[str, Unit], None], read_back: Callable[[str], tuple[int, int]],
           classify: Callable[[BaseException], str | None]) -> None:
    """Units of work until ``deadline``; every outcome goes in ``ledger``."""
    n = 0
    while time.monotonic() < deadline:
        key = f"{prefix}-{n}"
        n += 1
        unit = Unit()
        t0 = time.monotonic()
        try:
            write(key, unit)
        except Exception as exc:
            _failed(ledger, key, unit, exc, classify)
            _timed(ledger, t0)
            time.sleep(PAUSE)
            continue
        assert unit.port is not None
        with ledger.lock:
            ledger.acked[key] = unit.port
        try:
            port, rows = read_back(key)
        except Exception as exc:
            _record_error(ledger, "readback", exc, classify)
        else:
            same = port == unit.port
            with ledger.lock:
                ledger.reads["same zone" if same else "other zone"] += 1
                if rows != (1 if same else 0):
                    ledger.readback_bad.append(f"{key}: {rows} rows on port {port}, "
                                               f"committed on {unit.port}")
        _timed(ledger, t0)
        time.sleep(PAUSE)


def _timed(ledger: Ledger, t0: float) -> None:
    took = time.monotonic() - t0
    with ledger.lock:
        ledger.slowest = max(ledger.slowest, took)


def _failed(ledger: Ledger, key: str, unit: Unit, exc: BaseException,
            classify: Callable[[BaseException], str | None]) -> None:
    with ledger.lock:
        if unit.phase == "commit":
            ledger.unknown[key] = unit.port
        else:
            ledger.aborted.add(key)
    _record_error(ledger, unit.phase, exc, classify)


def _record_error(ledger: Ledger, phase: str, exc: BaseException,
                  classify: Callable[[BaseException], str | None]) -> None:
    kind = classify(exc)
    with ledger.lock:
        if kind is None:
            text = "".join(traceback.format_exception_only(exc)).strip()
            ledger.undocumented.append(f"{phase}: {text[:500]}")
            ledger.errors[f"UNDOCUMENTED {type(exc).__name__}"] += 1
        else:
            ledger.errors[kind] += 1


def verify(ledger: Ledger, rows: dict[int, dict[str, int]]) -> list[str]:
    """What is wrong, given ``rows``: server port -> key -> row count."""
    problems: list[str] = []
    total: Counter[str] = Counter()
    for per_key in rows.values():
        total.update(per_key)
    twice = [k for k, n in total.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} keys stored more than once, e.g. {twice[:5]}")
    for key, port in ledger.acked.items():
        here = rows.get(port, {}).get(key, 0)
        if here != 1:
            problems.append(f"acknowledged {key} has {here} rows on port {port}")
        elsewhere = total[key] - here
        if elsewhere:
            problems.append(f"acknowledged {key} also stored on another zone")
    for key in ledger.aborted:
        if total[key]:
            problems.append(f"{key} failed before COMMIT but is stored ({total[key]} rows)")
    for key, port in ledger.unknown.items():
        if port is not None and total[key] != rows.get(port, {}).get(key, 0):
            problems.append(f"{key}: outcome unknown, but stored on another zone")
    known = set(ledger.acked) | ledger.aborted | set(ledger.unknown)
    mine = {k.split("-", 1)[0] for k in known}  # this ledger's writers
    strays = [k for k in total if k not in known and k.split("-", 1)[0] in mine]
    if strays:
        problems.append(f"{len(strays)} rows nobody wrote, e.g. {strays[:5]}")
    problems += [f"read back: {r}" for r in ledger.readback_bad[:20]]
    problems += [f"undocumented error: {u}" for u in ledger.undocumented[:20]]
    return problems
