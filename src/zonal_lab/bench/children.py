"""The environment of the bench's child Python processes (the memory measure, the
serverless workers): they must import the same zonal as the parent.

An installed zonal (a wheel, or ``pip install -e``) is found by any interpreter of
the same environment. A checkout run without installing (``PYTHONPATH=src``, or
the test suite putting ``src/`` on ``sys.path``) is not: its folder is passed on in
``PYTHONPATH``.
"""

from __future__ import annotations

import os
import site
from pathlib import Path

__all__ = ["child_env", "code_root"]


def code_root() -> str:
    """The folder that holds ``zonal_core`` and ``zonal_lab`` (``src/`` of a checkout,
    or ``site-packages``)."""
    import zonal_core

    return str(Path(zonal_core.__file__).resolve().parent.parent)


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with :func:`code_root` first on ``PYTHONPATH``
    unless it is a site-packages folder every interpreter here already searches."""
    env = {**os.environ, **extra}
    root = code_root()
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
