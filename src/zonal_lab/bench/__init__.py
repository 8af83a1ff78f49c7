"""``zonal bench``: zonal side by side with the pools users would pick instead.

::

    $ zonal bench                                   # every scenario, every subject
    $ zonal bench --quick                           # the same, shorter (< 3 min on 2 cores)
    $ zonal bench --against queuepool,psycopg_pool --scenarios overhead,failover
    $ python -m zonal_lab.bench --quick             # the same without the zonal command

The modules:

- :mod:`~zonal_lab.bench.command`: the command line and the run (``add_arguments``,
  ``run``, ``main``, re-exported here: the ``zonal`` command loads this package);
- :mod:`~zonal_lab.bench.subjects`: the pools compared (``SUBJECTS``, the one list);
- :mod:`~zonal_lab.bench.scenarios`: what is measured (``SCENARIOS``, the one list);
- :mod:`~zonal_lab.bench.workload`: the bounded multi-thread workload they share;
- :mod:`~zonal_lab.bench.overhead` (``python -m zonal_lab.bench.overhead``): checkout +
  checkin on a fake driver;
- :mod:`~zonal_lab.bench.serverless` (``python -m zonal_lab.bench.serverless``): frozen
  instances, thaw, deploy storm, shutdown, with real processes;
- :mod:`~zonal_lab.bench.memory`: the child process that measures a pool's memory;
- :mod:`~zonal_lab.bench.report` (``python -m zonal_lab.bench.report DIR``) and
  :mod:`~zonal_lab.bench.plot`: ``results.md`` and the PNG plots.
"""

from __future__ import annotations

from zonal_lab.bench.command import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
