"""``zonal demo`` end to end, as a user runs it: a real process, real zones, a real
outage; its summary must say failover and failback happened with no unexpected
error, and nothing may be left behind (servers, files), also after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zonal_lab import demo
from zonal_lab.demo_workload import django_unavailable
from zonal_lab.pytest_plugin import lab_missing, require_lab

pytestmark = pytest.mark.timeout(120)


def zonal_demo(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zonal_tools.cli", "demo", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def lab_folder(out: str) -> Path:
    m = re.search(r"files in (\S+)\)", out)
    assert m, out
    return Path(m.group(1))


def processes_using(folder: Path) -> list[int]:
    """PIDs whose command line names ``folder`` (postgres -D <folder>/zone-a, ...)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(int(proc.name))
    return found


def assert_cleaned_up(out: str) -> None:
    folder = lab_folder(out)
    assert "cleanup: everything stopped and removed" in out, out
    assert not folder.exists(), f"{folder} left behind"
    assert processes_using(folder) == [], "server processes left behind"


def summary_line(out: str, key: str) -> str:
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith(key)]
    assert lines, f"no {key!r} line in:\n{out}"
    return lines[0]


def check_summary(out: str) -> None:
    assert summary_line(out, "failover:").startswith("failover:  yes"), out
    errors = summary_line(out, "errors:")
    assert re.search(r"\b0 unexpected\b", errors), errors
    fb = [line for line in out.splitlines() if line.strip().startswith("failback:")]
    assert len(fb) == 2 and not any("NO" in line for line in fb), fb
    assert "none hung" in summary_line(out, "black hole:")
    assert summary_line(out, "result:") == "result: OK"
    # every phase happened: the scheduled faults in order; the pool's own events
    # (failover, failback) each twice, wherever the timing put them (on a loaded
    # machine a failover may be seen only after the scheduled restart)
    pos = 0
    for step in ["kill zone a", "start zone a again", "black-hole zone a", "heal zone a"]:
        pos = out.index(step, pos)
    events = [line.split("  ", 2)[-1] for line in out.splitlines() if line.startswith(">>")]
    assert sum(e.startswith("failover:") for e in events) == 2, events
    assert sum(e.startswith("failback:") for e in events) == 2, events
    first_kill = out.index("kill zone a")
    assert out.index("failover:", first_kill) < out.index("summary")
    # the live table was shown
    assert "in use" in out and "waiting" in out and "p99" in out


@pytest.fixture(autouse=True)
def _lab_available() -> None:
    require_lab()


def test_demo_20_seconds_end_to_end() -> None:
    t0 = time.monotonic()
    done = zonal_demo("--duration", "20")
    took = time.monotonic() - t0
    out = done.stdout
    print(out[-2500:], done.stderr[-2000:])
    assert done.returncode == 0, (done.stdout, done.stderr)
    check_summary(out)
    assert_cleaned_up(out)
    assert took < 60


def test_demo_through_django() -> None:
    reason = django_unavailable()
    if reason is not None:
        lab_missing(reason)
    done = zonal_demo("--duration", "20", "--django")
    print(done.stdout[-2500:], done.stderr[-2000:])
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "through Django (zonal_django)" in done.stdout
    check_summary(done.stdout)
    assert_cleaned_up(done.stdout)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_cleans_up(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zonal_tools.cli", "demo", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for the workload to run
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if "phase:" in line:
            break
    assert "phase:" in seen, seen
    time.sleep(1.0)
    proc.send_signal(sig)
    try:
        rest, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    out = seen + rest
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in out
    assert_cleaned_up(out)


def test_too_short_a_duration_is_refused() -> None:
    done = zonal_demo("--duration", "5", timeout=30)
    assert done.returncode == 2
    assert "--duration must be between 20" in done.stderr


def test_every_phase_fits_the_shortest_run() -> None:
    for duration in (20, 30, 60, 120):
        t = demo.timeline(duration)
        # the zone is back before its first ejection can end, so the probe finds it up
        assert t.kill_at < t.restart_at < t.kill_at + t.base_ejection
        # room for the longest ejection and failback_after before the next fault / the end
        assert t.restart_at + t.max_ejection + t.failback_after < t.blackhole_at
        assert t.heal_at + t.max_ejection + t.failback_after + 1.5 < duration
