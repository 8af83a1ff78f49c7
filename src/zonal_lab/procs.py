"""Signals to process trees, by PID only.

PostgreSQL makes every backend the leader of its own process group
(``InitPostmasterChild`` calls ``setsid``), so a signal to the postmaster's group
does not reach its backends: we find them by parent PID instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["alive", "children", "signal_tree", "wait_gone"]

_PROC = Path("/proc/self/stat").exists()  # Linux; elsewhere ps and kill(pid, 0)


def _linux_children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process is gone already
            continue
        # the command name may hold spaces and parentheses: split after the last ")"
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (not grandchildren)."""
    if _PROC:
        return _linux_children(pid)
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False
    ).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and int(parts[1]) == pid:
            found.append(int(parts[0]))
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    if _PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def signal_tree(pid: int, sig: int) -> list[int]:
    """Send ``sig`` to ``pid`` and to its children; return the children signalled.

    For SIGSTOP and SIGKILL the parent is stopped first, so it forks no new child
    between our listing and our signal; the listing is then taken once more to catch
    a child forked just before. SIGCONT goes to the children first, so the parent
    never runs while they are still stopped.
    """
    if sig == signal.SIGCONT:
        kids = children(pid)
        for kid in kids:
            _send(kid, sig)
        _send(pid, sig)
        return kids
    if sig in (signal.SIGSTOP, signal.SIGKILL):
        _send(pid, signal.SIGSTOP)
    kids = children(pid)
    for kid in kids:
        _send(kid, sig)
    for kid in children(pid):
        if kid not in kids:
            _send(kid, sig)
            kids.append(kid)
    _send(pid, sig)
    return kids


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive; False if some still are at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` of a server's log file, for error messages ("" if unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
