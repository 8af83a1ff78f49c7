"""Shared test setup.

The lab's fixtures (``zonal_lab``) come from the ``zonal`` pytest plugin, loaded
through its ``pytest11`` entry point once zonal is installed (``pip install -e .``).
Run from a checkout that is not installed, the plugin is loaded from ``src/`` here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
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


#: How long the lab's servers may take to show what a client just did (a session
#: that ends after its client closed it, or starts): a cap for a loaded machine, not
#: an expectation; :func:`eventually` returns as soon as the probe agrees.
SETTLE = 30.0


def eventually(probe: Callable[[], Any], expected: Any, within: float = SETTLE) -> Any:
    """``probe()`` once it returns ``expected`` (bounded wait); the last value else."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


# Figures the docs quote, printed again in the run's summary, by section.
_FIGURES: dict[str, list[tuple[str, str]]] = {}


def keep_figure(section: str, test: str, line: str) -> None:
    """Print ``line`` now and in the summary's ``section`` at the end of the run."""
    _FIGURES.setdefault(section, []).append((test, line))
    print(line)


@pytest.fixture
def zone_figure(request: pytest.FixtureRequest) -> Any:
    """``zone_figure(line)``: a routing figure, shown in every test run's output."""

    def keep(line: str) -> str:
        keep_figure("zone routing figures", request.node.name, line)
        return line

    return keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for section, lines in _FIGURES.items():
        terminalreporter.section(section)
        for name, line in lines:
            terminalreporter.write_line(f"{name}: {line}")
