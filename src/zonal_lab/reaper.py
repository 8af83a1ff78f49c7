"""Last-resort cleanup: a watchdog process that outlives a lab's owner.

``atexit`` and signal handlers cannot run when the owner dies of SIGKILL (a CI job
killed on timeout, an OOM kill). So every lab starts this small process and tells
it, through its stdin, each server it starts and the folder it uses. When that stdin
closes, because the lab stopped or because its owner died however it died, the
reaper SIGKILLs whatever of those servers still runs (the very processes: PID and
start time must match) and removes the folder. After a normal stop there is nothing
left for it to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from zonal_lab import procs

__all__ = ["Reaper", "main"]


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), else ``"-"``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    return stat.rsplit(")", 1)[-1].split()[19]


class Reaper:
    """The owner's side: start the watchdog, tell it what to clean up."""

    def __init__(self) -> None:
        # the owner may have found zonal_lab through its own sys.path (a checkout)
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "zonal_lab.reaper"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # a Ctrl-C for the owner must not end it first
        )

    def _tell(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # the reaper is gone: nothing to do
            pass

    def watch(self, pid: int) -> None:
        """Kill ``pid`` (and its children) if the owner dies."""
        self._tell(f"pid {pid} {_start_time(pid)}")

    def folder(self, path: Path) -> None:
        """Remove ``path`` if the owner dies."""
        self._tell(f"dir {path}")

    def close(self) -> None:
        """Close its stdin; it cleans what is left, then exits."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    """Read ``pid PID START`` and ``dir PATH`` lines until EOF, then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pids: dict[int, str] = {}
    folders: list[str] = []
    for line in sys.stdin:
        kind, _, rest = line.rstrip("\n").partition(" ")
        if kind == "pid":
            pid, _, start = rest.partition(" ")
            pids[int(pid)] = start
        elif kind == "dir":
            folders.append(rest)
    for pid, start in pids.items():
        if procs.alive(pid) and _start_time(pid) == start:
            procs.signal_tree(pid, signal.SIGKILL)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
