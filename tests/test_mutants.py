"""``scripts/mutants`` stays in step with the code: every mutant's snippet occurs
exactly once in ``src/`` and every test it names exists. (Running the mutants
themselves takes minutes: ``scripts/mutants``, see docs/reliability.md.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zonal_mutants", ROOT / "scripts/mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


mutants = _load()


def test_names_are_unique_and_listed() -> None:
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
    assert len(names) >= 12


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_every_snippet_occurs_once_and_every_test_exists(mutant: object) -> None:
    for edit in mutant.edits:  # type: ignore[attr-defined]
        text = (ROOT / edit.path).read_text()
        assert text.count(edit.old) == 1, f"stale mutant: {edit.old!r} in {edit.path}"
        assert edit.new != edit.old
    for arg in mutant.tests:  # type: ignore[attr-defined]
        path, _, node = arg.partition("::")
        assert (ROOT / path).exists(), arg
        if node:
            func = re.sub(r"\[.*\]$", "", node)
            assert re.search(rf"^def {re.escape(func)}\(", (ROOT / path).read_text(),
                             re.MULTILINE), arg
