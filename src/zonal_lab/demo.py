"""``zonal demo``: three local zones, a workload, a zone outage, failover and failback.

::

    $ zonal demo                  # about 60 s
    $ zonal demo --duration 20    # every phase, faster
    $ zonal demo --django         # the same through zonal_django

Three real PostgreSQL servers start on loopback (the lab: no Docker, nothing to
install but the ``lab`` extra), each behind a fault proxy. Client threads send a mix
of reads, committed writes and slow reads through ``ZonalPool`` with ``a`` as the
local zone, while the demo

1. kills zone ``a`` (SIGKILL): the requests in flight there fail, the rest move on;
2. starts it again: after its ejection and ``failback_after`` traffic returns;
3. black-holes it (the network drops everything, the server looks alive): requests
   in flight give up after ``query_timeout``, nothing hangs, traffic moves on;
4. heals it: traffic fails back again.

A per-zone table is redrawn in place on a terminal (plain periodic blocks
otherwise). The summary says whether failover and failback happened, the errors
seen against those expected (only requests in flight on the failing zone), and
how long failback took; the lab is stopped and its files removed, also on Ctrl-C.
Exit code 0 when all of that held, 1 when not, 2 when the demo could not run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from zonal_core.health import HealthPolicy
from zonal_lab.demo_view import Screen, format_ms, table
from zonal_lab.demo_workload import (
    CREATE_TABLE,
    DemoAdapter,
    DjangoTarget,
    Record,
    SQLAlchemyTarget,
    Workload,
    django_unavailable,
    set_health_policy,
)

__all__ = ["MIN_DURATION", "Timeline", "add_arguments", "main", "run", "timeline"]

MIN_DURATION = 20.0
MAX_DURATION = 600.0
ZONES = ("a", "b", "c")
LOCAL = "a"
THREADS = 6
POOL_SIZE = 4
QUERY_TIMEOUT = 1.0
CONNECT_TIMEOUT = 1.0
PING_TIMEOUT = 0.5
POOL_TIMEOUT = 5.0
_TICK = 0.1
_JOIN_TIMEOUT = 15.0


@dataclass(frozen=True)
class Timeline:
    """When each fault happens and how long ejections last, for one duration.

    >>> t = timeline(20)
    >>> (t.kill_at, t.restart_at, t.blackhole_at, t.heal_at, t.failback_after)
    (2.0, 3.0, 10.0, 12.0, 2.0)
    """

    duration: float
    kill_at: float
    restart_at: float
    blackhole_at: float
    heal_at: float
    base_ejection: float
    max_ejection: float
    failback_after: float

    def steps(self) -> list[tuple[float, str]]:
        return [(self.kill_at, "kill"), (self.restart_at, "restart"),
                (self.blackhole_at, "blackhole"), (self.heal_at, "heal")]


def timeline(duration: float) -> Timeline:
    """The demo's schedule: the zone comes back before its first ejection ends (so
    the probe finds it up), and each outage leaves room for the failback after it.
    Ejections and ``failback_after`` are shortened below a minute of demo."""
    d = float(duration)
    base = round(min(5.0, max(1.5, d / 12)), 2)
    return Timeline(
        duration=d,
        kill_at=round(0.10 * d, 2),
        restart_at=round(0.10 * d + 0.6 * base, 2),
        blackhole_at=round(0.50 * d, 2),
        heal_at=round(0.60 * d, 2),
        base_ejection=base,
        max_ejection=round(1.5 * base, 2),
        failback_after=round(min(5.0, max(2.0, d / 12)), 2),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, metavar="S",
                        help=f"seconds of workload (default 60, at least {MIN_DURATION:.0f})")
    parser.add_argument("--django", action="store_true",
                        help="run the workload through Django (zonal_django) instead of "
                             "SQLAlchemy")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"client threads (default {THREADS})")
    parser.add_argument("--plain", action="store_true",
                        help="print periodic blocks even on a terminal")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``zonal demo``; returns the exit code."""
    duration = float(args.duration)
    if not MIN_DURATION <= duration <= MAX_DURATION:
        print(f"zonal demo: --duration must be between {MIN_DURATION:.0f} and "
              f"{MAX_DURATION:.0f} seconds (every phase needs {MIN_DURATION:.0f})",
              file=sys.stderr)
        return 2
    if not 1 <= int(args.threads) <= 32:
        print("zonal demo: --threads must be between 1 and 32", file=sys.stderr)
        return 2
    if args.django:
        why = django_unavailable()
        if why is not None:
            print(why, file=sys.stderr)
            return 2
    out = sys.stdout
    demo = Demo(timeline(duration), django=bool(args.django), threads=int(args.threads),
                out=out, tty=out.isatty() and not args.plain)
    with _sigterm_as_interrupt():
        return demo.run()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM cleans up like Ctrl-C (the main thread only may set handlers)."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Observed:
    """What the demo saw, in seconds since the workload started."""

    preferred: list[tuple[float, str | None]] = field(default_factory=list)
    done: dict[str, float] = field(default_factory=dict)  # step -> when it ran
    failback: list[float] = field(default_factory=list)  # local preferred again
    failover: list[tuple[float, str]] = field(default_factory=list)  # moved away, to


class Demo:
    """One run: lab, target, workload, schedule, view, summary, cleanup."""

    def __init__(self, plan: Timeline, *, django: bool, threads: int, out: TextIO,
                 tty: bool) -> None:
        self.plan = plan
        self.django = django
        self.threads = threads
        self.out = out
        self.screen = Screen(out, tty)
        self.observed = Observed()
        self.pids: set[int] = set()

    def say(self, line: str = "") -> None:
        self.screen.event(line)

    def run(self) -> int:
        from zonal_lab import Lab, LabError

        plan = self.plan
        via = "Django (zonal_django)" if self.django else "SQLAlchemy (ZonalPool)"
        self.say(f"zonal demo: three PostgreSQL zones on this machine, a workload through "
                 f"{via}, and an outage of the local zone.")
        lab = Lab(zones=list(ZONES))
        target: DemoAdapter | None = None
        workload: Workload | None = None
        code = 2
        began = time.monotonic()
        try:
            try:
                lab.start()
            except LabError as e:
                self.say(f"zonal demo: the lab could not start: {e}")
                return 2
            self._note_pids(lab)
            version = self._prepare(lab)
            self.say(f"zones {', '.join(ZONES)} up in {lab.started_in or 0:.1f} s "
                     f"(PostgreSQL {version}, each behind a fault proxy on 127.0.0.1; "
                     f"files in {lab.base_dir})")
            target = self._target(lab)
            set_health_policy(target.core(), HealthPolicy(
                base_ejection=plan.base_ejection, max_ejection=plan.max_ejection))
            self._describe()
            workload = Workload(target, threads=self.threads, seconds=plan.duration)
            code = self._drive(lab, target, workload)
        except KeyboardInterrupt:
            self.screen.keep()
            self.say("")
            self.say("interrupted: stopping the workload and the zones")
            code = 130
        finally:
            if workload is not None:
                workload.stop()
                workload.join(_JOIN_TIMEOUT)
            if target is not None:
                try:
                    target.close()
                except Exception as e:  # the lab must stop regardless
                    self.say(f"closing the pool failed: {type(e).__name__}")
            base = lab.base_dir
            lab.stop()
            left = self._leftovers(base)
            self.say(f"cleanup: {'everything stopped and removed' if not left else 'LEFT: ' + left}"
                     f" ({len(self.pids)} server processes, lab folder {base})")
            if left and code == 0:
                code = 1
            self.say(f"took {time.monotonic() - began:.1f} s")
        return code

    # -- setup ------------------------------------------------------------------

    def _prepare(self, lab: Any) -> str:
        version = "?"
        for name in ZONES:
            with lab[name].connect(autocommit=True) as conn:
                conn.execute(CREATE_TABLE)
                row = conn.execute("SHOW server_version").fetchone()
                version = str(row[0]).split()[0] if row else version
        return version

    def _zones_by_port(self, lab: Any) -> dict[int, str]:
        return {int(ep.rsplit(":", 1)[1]): z for z, ep in lab.zones(pgbouncer=False).items()}

    def _options(self, lab: Any) -> dict[str, Any]:
        return {
            "zones": lab.zones(pgbouncer=False),
            "local_zone": LOCAL,
            "pool_size": POOL_SIZE,
            "connect_timeout": CONNECT_TIMEOUT,
            "ping_timeout": PING_TIMEOUT,
            "query_timeout": QUERY_TIMEOUT,
            "failback_after": self.plan.failback_after,
        }

    def _target(self, lab: Any) -> DemoAdapter:
        options = self._options(lab)
        if self.django:
            options["timeout"] = POOL_TIMEOUT
            database = {
                "ENGINE": "zonal_django.backends.postgresql",
                "NAME": lab.database, "USER": lab.user, "PASSWORD": lab.password,
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": {"zonal": options},
            }
            return DjangoTarget(database, self._zones_by_port(lab))
        url = f"postgresql+psycopg://{lab.user}:{lab.password}@/{lab.database}"
        return SQLAlchemyTarget(url, self._zones_by_port(lab), pool_pre_ping=True,
                                pool_timeout=POOL_TIMEOUT, **options)

    def _describe(self) -> None:
        p = self.plan
        short = p.base_ejection < 5.0 or p.failback_after < 30
        self.say(f"pool: local_zone={LOCAL!r} pool_size={POOL_SIZE} pre-ping on, "
                 f"ping_timeout={PING_TIMEOUT:g} query_timeout={QUERY_TIMEOUT:g} "
                 f"connect_timeout={CONNECT_TIMEOUT:g} failback_after={p.failback_after:g}, "
                 f"first ejection {p.base_ejection:g} s"
                 + (" (shortened for the demo; defaults: failback_after=30, ejection 5 s)"
                    if short else ""))
        self.say(f"workload: {self.threads} client threads; 70% reads, 20% committed "
                 f"writes, 10% slow reads (50 ms)")
        self.say(f"plan: {p.kill_at:g} s kill a | {p.restart_at:g} s start a | "
                 f"{p.blackhole_at:g} s black-hole a | {p.heal_at:g} s heal a | "
                 f"{p.duration:g} s end")
        self.say("")

    def _note_pids(self, lab: Any) -> None:
        for zone in lab:
            if zone.postgres.pid is not None:
                self.pids.add(int(zone.postgres.pid))

    # -- the run ----------------------------------------------------------------

    def _drive(self, lab: Any, target: DemoAdapter, workload: Workload) -> int:
        plan = self.plan
        zone = lab[LOCAL]
        actions: dict[str, tuple[Callable[[], None], str]] = {
            "kill": (zone.kill, "kill zone a: SIGKILL of its server and every backend"),
            "restart": (zone.start, "start zone a again (crash recovery, same port)"),
            "blackhole": (zone.proxy.blackhole,
                          "black-hole zone a: its network drops everything, the server "
                          "looks alive"),
            "heal": (zone.proxy.heal, "heal zone a's network"),
        }
        pending = plan.steps()
        render_every = 0.5 if self.screen.tty else max(2.0, plan.duration / 15)
        next_render = 0.0
        workload.start()
        last_preferred: str | None = LOCAL
        # bounded: the duration in ticks, plus slack for slow ticks
        for _ in range(int(plan.duration / _TICK) * 2 + 100):
            now = workload.now()
            if now >= plan.duration:
                break
            while pending and pending[0][0] <= now:
                _, step = pending.pop(0)
                fn, text = actions[step]
                self.observed.done[step] = at = workload.now()
                fn()
                if step == "restart":
                    self._note_pids(lab)
                self.say(f">> {at:5.1f} s  {text}")
            stats = target.stats()
            preferred = stats.preferred_zone
            if preferred != last_preferred:
                self._preferred_changed(workload.now(), last_preferred, preferred)
                last_preferred = preferred
            if now >= next_render:
                self._render(stats, workload, now)
                next_render = now + render_every
            time.sleep(_TICK)
        workload.stop()
        if not workload.join(_JOIN_TIMEOUT):
            self.say("a client thread did not finish in time")
        self._render(target.stats(), workload, workload.now())
        self.screen.keep()
        return self._summary(workload.snapshot(), target)

    def _preferred_changed(self, now: float, old: str | None, new: str | None) -> None:
        self.observed.preferred.append((now, new))
        if new == LOCAL:
            self.observed.failback.append(now)
            self.say(f">> {now:5.1f} s  failback: new connections go to zone a again")
        elif old == LOCAL and new is not None:
            self.observed.failover.append((now, new))
            self.say(f">> {now:5.1f} s  failover: zone a is out, new connections go to "
                     f"zone {new}")
        else:
            self.say(f">> {now:5.1f} s  new connections go to zone {new or '(none)'}")

    def _render(self, stats: Any, workload: Workload, now: float) -> None:
        head = f"t = {now:5.1f} s of {self.plan.duration:g}   phase: {self._phase(now)}"
        self.screen.draw([head, *table(stats, workload.snapshot(), now)])

    def _phase(self, now: float) -> str:
        done = self.observed.done
        fb = self.observed.failback
        if "heal" in done:
            return ("failed back to a" if fb and fb[-1] >= done["heal"]
                    else "a healed, waiting out its ejection and failback_after")
        if "blackhole" in done:
            return "a black-holed"
        if "restart" in done:
            return ("failed back to a" if fb and fb[-1] >= done["restart"]
                    else "a restarted, waiting out its ejection and failback_after")
        if "kill" in done:
            return "a killed"
        return "steady, traffic on the local zone a"

    # -- the end ----------------------------------------------------------------

    def _summary(self, records: list[Record], target: DemoAdapter) -> int:
        plan, seen = self.plan, self.observed
        ok = True
        say = self.say
        say("")
        say("summary")
        served: dict[str, int] = {}
        for r in records:
            if r.error is None and r.zone is not None:
                served[r.zone] = served.get(r.zone, 0) + 1
        say(f"  requests:  {len(records)} in {plan.duration:g} s; served by zone "
            + ", ".join(f"{z} {served.get(z, 0)}" for z in ZONES))

        faults = [(seen.done[s], s) for s in ("kill", "blackhole") if s in seen.done]
        window = QUERY_TIMEOUT + CONNECT_TIMEOUT + 1.5
        expected: list[Record] = []
        unexpected: list[Record] = []
        per_fault: dict[str, int] = {}
        for r in (r for r in records if r.error is not None):
            fault = next((s for t, s in faults
                          if t - 0.05 <= r.end <= t + window and r.zone in (LOCAL, None)), None)
            if fault is not None and per_fault.get(fault, 0) < POOL_SIZE:
                per_fault[fault] = per_fault.get(fault, 0) + 1
                expected.append(r)
            else:
                unexpected.append(r)

        # failover: traffic left a after the kill
        kill_t = seen.done.get("kill")
        moved = [(t, z) for t, z in seen.failover if kill_t is not None and t >= kill_t]
        first_elsewhere = min((r.end for r in records if r.error is None and kill_t is not None
                               and r.end >= kill_t and r.zone not in (LOCAL, None)),
                              default=None)
        if moved and first_elsewhere is not None and kill_t is not None:
            say(f"  failover:  yes: zone a killed at {kill_t:.1f} s; first request served by "
                f"another zone {format_ms(first_elsewhere - kill_t)} later; new connections "
                f"went to zone {moved[0][1]}")
        else:
            ok = False
            say("  failover:  NO: traffic did not move away from the killed zone")

        bh_t = seen.done.get("blackhole")
        if bh_t is not None:
            heal_t = seen.done.get("heal", plan.duration)
            during = [r for r in records if r.end >= bh_t and r.start < heal_t]
            slowest = max((r.end - r.start for r in during), default=0.0)
            hung = slowest > QUERY_TIMEOUT + CONNECT_TIMEOUT + POOL_TIMEOUT
            timeouts = sum(1 for r in during if r.error == "QueryTimeout")
            say(f"  black hole: {timeouts} request(s) in flight on zone a gave up after "
                f"query_timeout={QUERY_TIMEOUT:g} s (QueryTimeout); slowest request "
                f"{format_ms(slowest)}; " + ("A REQUEST HUNG" if hung else "none hung"))
            ok = ok and not hung

        kinds: dict[str, int] = {}
        for r in expected + unexpected:
            assert r.error is not None
            kinds[r.error] = kinds.get(r.error, 0) + 1
        say(f"  errors:    {len(expected) + len(unexpected)} seen, {len(expected)} expected "
            f"(requests in flight on zone a when it died or went dark: "
            f"{per_fault.get('kill', 0)} at the kill, {per_fault.get('blackhole', 0)} at the "
            f"black hole), {len(unexpected)} unexpected"
            + (f"; by type: {', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}"
               if kinds else ""))
        for r in unexpected[:5]:
            say(f"             unexpected: {r.error} at {r.end:.2f} s on zone {r.zone or '-'}")
        ok = ok and not unexpected

        for step, label in (("restart", "the restart"), ("heal", "healing")):
            back = seen.done.get(step)
            if back is None:
                continue
            nxt = {"restart": seen.done.get("blackhole"), "heal": None}[step] or plan.duration
            fb = next((t for t in seen.failback if back <= t <= nxt), None)
            if fb is None:
                ok = False
                say(f"  failback:  NO: zone a was not preferred again after {label}")
            else:
                say(f"  failback:  {fb - back:.1f} s after {label} (rest of its ejection, "
                    f"then failback_after={plan.failback_after:g} s on probation)")
        stats = target.stats()
        say(f"  pool:      failovers {sum(z.failovers for z in stats.zones.values())}, "
            f"connections opened "
            + ", ".join(f"{z} {s.connects}" for z, s in stats.zones.items())
            + f"; now preferred: {stats.preferred_zone}")
        say(f"result: {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1

    def _leftovers(self, base: Path | None) -> str:
        alive = sorted(p for p in self.pids if _alive(p))
        parts = []
        if alive:
            parts.append(f"server processes still running: {alive}")
        if base is not None and base.exists():
            parts.append(f"folder {base} still exists")
        return "; ".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is gone, unreaped


def main(argv: list[str] | None = None) -> int:
    """``python -m zonal_lab.demo``."""
    parser = argparse.ArgumentParser(prog="zonal demo")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
