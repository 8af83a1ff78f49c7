"""The README's runnable shell blocks work as written.

A block is runnable when the line before its opening fence is ``<!-- runnable -->``.
Each runs with bash from the repository root. Run by ``scripts/test`` (whose Python
is the repository's ``.venv``) the blocks run as written; run from another Python,
``.venv/bin/`` means that Python's folder and the venv creation is skipped, so the
test never builds a second environment. The demo runs with ``--duration 20``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zonal_lab.pytest_plugin import require_lab

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARK = "<!-- runnable -->"


def runnable_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks right after a runnable mark."""
    blocks = []
    for m in re.finditer(re.escape(MARK) + r"\s*\n```(?:bash|sh|console)\n(.*?)\n```", text,
                         re.DOTALL):
        blocks.append(m.group(1))
    return blocks


def adapt(block: str) -> str:
    """Make a block fit this test run (see the module docstring)."""
    venv = ROOT / ".venv"
    in_repo_venv = Path(sys.prefix).resolve() == venv.resolve()
    if not in_repo_venv:
        block = block.replace("python3 -m venv .venv && ", "")
        block = block.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    return re.sub(r"(zonal demo)(?!\s+--duration)", r"\1 --duration 20 --plain", block)


def test_the_readme_has_runnable_blocks() -> None:
    blocks = runnable_blocks(README.read_text())
    assert len(blocks) >= 4
    assert "zonal demo" in blocks[0], "the first command is the demo"
    assert 'pip install -q -e ".[lab]"' in blocks[0]


def test_adapt_keeps_the_commands() -> None:
    out = adapt('python3 -m venv .venv && .venv/bin/pip install -e ".[lab]" && '
                ".venv/bin/zonal demo")
    assert out.endswith("zonal demo --duration 20 --plain")
    assert "pip install -e" in out


@pytest.mark.timeout(240)
def test_runnable_blocks_run() -> None:
    require_lab()
    blocks = runnable_blocks(README.read_text())
    began = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for block in blocks:
        script = adapt(block)
        t0 = time.monotonic()
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=150, check=False)
        print(f"--- {time.monotonic() - t0:.1f} s: {script[:120]}\n{done.stdout[-1500:]}")
        assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if "zonal demo" in script:
            assert "result: OK" in done.stdout
        if "run.py" in script and "--check" in script:
            assert "check: OK" in done.stdout
    print(f"all {len(blocks)} blocks in {time.monotonic() - began:.1f} s")
