"""Shared test setup.

The lab's fixtures (``zonal_lab``) come from the ``zonal`` pytest plugin, loaded
through its ``pytest11`` entry point once zonal is installed (``pip install -e .``).
Run from a checkout that is not installed, the plugin is loaded from ``src/`` here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if manager.has_plugin("zonal") or manager.has_plugin("zonal_lab.pytest_plugin"):
        return
    src = str(Path(__file__).resolve().parent.parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    manager.import_plugin("zonal_lab.pytest_plugin")
