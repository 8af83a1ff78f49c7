"""The local multi-zone lab: real PostgreSQL zones, PgBouncer and a fault proxy.

>>> from zonal_lab import Lab
>>> with Lab(zones=["a", "b"], pgbouncer=True) as lab:   # doctest: +SKIP
...     lab.zones(pgbouncer=True)
{'a': '127.0.0.1:40001', 'b': '127.0.0.1:40005'}
"""

from zonal_lab.errors import LabError
from zonal_lab.lab import Lab, Zone
from zonal_lab.load import CpuLoad, LoadSeen, cpu_load
from zonal_lab.proxy import FaultProxy

__all__ = ["CpuLoad", "FaultProxy", "Lab", "LabError", "LoadSeen", "Zone", "cpu_load"]
