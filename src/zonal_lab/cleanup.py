"""Stopping every running lab when the process ends, however it ends.

A ``with Lab(...)`` block stops its lab on the way out, also on an exception or a
Ctrl-C (KeyboardInterrupt unwinds through it). For what escapes that: an ``atexit``
hook, and a SIGTERM handler (Python's default for SIGTERM is to die without running
``atexit``) that stops the labs and then dies of SIGTERM as it would have.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Protocol

__all__ = ["register", "stop_all", "unregister"]


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_lock = threading.Lock()
_running: dict[int, _Stoppable] = {}
_installed: list[bool] = []  # non-empty once the hooks are in


def stop_all() -> None:
    """Stop every registered lab (newest first)."""
    with _lock:
        labs = list(_running.values())
    for lab in reversed(labs):
        with contextlib.suppress(Exception):  # at exit, stop the others regardless
            lab.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install() -> None:
    if _installed:
        return
    _installed.append(True)
    atexit.register(stop_all)
    # only where we may (the main thread) and only over the default: a handler the
    # application set stays its own
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def register(lab: _Stoppable) -> None:
    """Stop ``lab`` at interpreter exit or SIGTERM unless it was stopped before."""
    with _lock:
        _install()
        _running[id(lab)] = lab


def unregister(lab: _Stoppable) -> None:
    """Forget ``lab`` (it stopped)."""
    with _lock:
        _running.pop(id(lab), None)
