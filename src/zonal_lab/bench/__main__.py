"""``python -m zonal_lab.bench``: ``zonal bench`` without the ``zonal`` command."""

from __future__ import annotations

import sys

from zonal_lab.bench.command import main

sys.exit(main())
