"""The chaos soak's Django writers, in a process of their own.

Django's settings are process-wide (and pytest-django guards the test process's),
so the Django half of the soak runs here: ``python -m tests.reliability.soak_django``
reads its settings as JSON on stdin, runs ``threads`` writers through the zonal
backend until ``seconds`` have passed, and prints its :class:`~soak.Ledger` as
JSON on the last line of stdout.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any


def main() -> None:
    spec = json.loads(sys.stdin.read())
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {
            "ENGINE": "zonal_django.backends.postgresql",
            "NAME": spec["database"], "USER": spec["user"], "PASSWORD": spec["password"],
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"zonal": spec["zonal"]},
        }},
        INSTALLED_APPS=["zonal_django"], USE_TZ=True, TIME_ZONE="UTC",
    )
    django.setup()
    from django.db import OperationalError, connection, transaction

    from tests.reliability.soak import COUNT_SQL, INSERT_SQL, Ledger, Unit, writer
    from zonal_core import NoHealthyZone, PoolTimeout, QueryTimeout
    from zonal_core.pgerrors import is_disconnect
    from zonal_django.pools import all_pools

    def write(key: str, unit: Unit) -> None:
        try:
            with transaction.atomic():
                unit.phase = "insert"
                with connection.cursor() as cur:
                    cur.execute(INSERT_SQL, [key])
                    unit.port = int(cur.fetchone()[0])
                    cur.execute(COUNT_SQL, [key])
                    if cur.fetchone()[1] != 1:
                        raise AssertionError(f"{key} not visible in its own transaction")
                unit.phase = "commit"  # atomic's exit commits
        finally:
            connection.close()  # back to the zonal pool: one unit is one request

    def read_back(key: str) -> tuple[int, int]:
        try:
            with connection.cursor() as cur:
                cur.execute(COUNT_SQL, [key])
                port, rows = cur.fetchone()
                return int(port), int(rows)
        finally:
            connection.close()

    def classify(exc: BaseException) -> str | None:
        if isinstance(exc, PoolTimeout):
            return "PoolTimeout"
        if isinstance(exc, NoHealthyZone):
            return "NoHealthyZone"
        if isinstance(exc, OperationalError):
            cause = exc.__cause__
            if isinstance(cause, QueryTimeout):
                return "QueryTimeout"
            if cause is not None and is_disconnect(cause):
                return f"OperationalError (disconnect: {type(cause).__name__})"
        return None

    ledger = Ledger()
    deadline = time.monotonic() + float(spec["seconds"])
    threads = [threading.Thread(target=writer, name=f"dj{i}", daemon=True,
                                args=(ledger, f"dj{i}", deadline, write, read_back, classify))
               for i in range(int(spec["threads"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 60)
    ledger.hung = sum(t.is_alive() for t in threads)
    stats = {name: {"in_use": p.stats().in_use, "waiting": p.stats().waiting,
                    "open": p.stats().open} for name, p in all_pools().items()}
    out: dict[str, Any] = ledger.as_json()
    out["stats"] = stats
    print(json.dumps(out))


if __name__ == "__main__":
    main()
