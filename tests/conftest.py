"""Shared test setup.

The lab's fixtures (``zonal_lab``) come from the ``zonal`` pytest plugin, loaded
through its ``pytest11`` entry point once zonal is installed (``pip install -e .``).
Run from a checkout that is not installed, the plugin is loaded from ``src/`` here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if manager.has_plugin("zonal") or manager.has_plugin("zonal_lab.pytest_plugin"):
        return
    src = str(Path(__file__).resolve().parent.parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    manager.import_plugin("zonal_lab.pytest_plugin")


_ZONE_FIGURES: list[tuple[str, str]] = []


@pytest.fixture
def zone_figure(request: pytest.FixtureRequest) -> Any:
    """``zone_figure(line)``: print ``line`` now and again in the run's summary, so
    the routing figures the docs quote show in every test run's output."""

    def keep(line: str) -> str:
        _ZONE_FIGURES.append((request.node.name, line))
        print(line)
        return line

    return keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ZONE_FIGURES:
        return
    terminalreporter.section("zone routing figures")
    for name, line in _ZONE_FIGURES:
        terminalreporter.write_line(f"{name}: {line}")
