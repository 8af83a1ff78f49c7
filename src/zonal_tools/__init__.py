"""What operators run against real servers: :mod:`zonal_tools.doctor` (a server's
settings against the pool's needs), :mod:`zonal_tools.sizing` (pool sizes for a
whole fleet) and the ``zonal`` command (:mod:`zonal_tools.cli`).

Stands on :mod:`zonal_core` and psycopg only: no framework adapter, and never the
lab, except the ``zonal bench`` and ``zonal demo`` subcommands, which load
``zonal_lab`` when (and only when) they are named.
"""
