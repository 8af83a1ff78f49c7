"""What zonal_django's tests share about the lab: the zones and the ``DATABASES``
entry for them. A module of its own, not ``conftest``: with several test folders
given on the command line, the name ``conftest`` is another folder's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
ZONES = ("a", "b")
# The key the plugin's zonal_lab fixture uses for zonal_lab(zones=("a","b"), pgbouncer=True),
# so those tests and these share one lab.
LAB_KEY = (ZONES, True, (), ())


def database_entry(lab: Any, *, name: str | None = None, **zonal: Any) -> dict[str, Any]:
    """A DATABASES entry for ``lab``: PgBouncer endpoints, PostgreSQL as ``direct``."""
    zones = {n: {"endpoints": [lab[n].endpoint(pgbouncer=True)],
                 "direct": lab[n].endpoint(pgbouncer=False)} for n in lab.names}
    options = {"zones": zones, "local_zone": "a", "pgbouncer": "transaction",
               "serverless": True, "timeout": 5, **zonal}
    return {"ENGINE": "zonal_django.backends.postgresql", "NAME": name or lab.database,
            "USER": lab.user, "PASSWORD": lab.password, "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"zonal": options}}
