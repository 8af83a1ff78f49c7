"""No password anywhere (issue 9, item 4).

With the password in the URL, in ``zones`` (``user:pw@host:port``), in a topology
file (``ZONAL_TOPOLOGY_FILE``) and from a provider (``password=callable``), every
error path reachable is run against real zones — authentication failure, PoolTimeout,
NoHealthyZone, QueryTimeout, configuration errors, a leak report — with every
logger at DEBUG (SQLAlchemy's engine and pool echo included), both metric exporters
scraped and every repr printed (pool, config, stats, records, endpoints, errors and
their tracebacks). Then all of that text is searched for the passwords, the right
one and the wrong ones, raw and percent-encoded: they appear nowhere.

Not searched: attributes of the driver's own exception objects (psycopg's ``pgconn``
can hold the connection string), which zonal never logs nor shows.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, create_engine, exc, text

from zonal_core import (
    CredentialError,
    NoHealthyZone,
    PoolTimeout,
    QueryTimeout,
    ZonalConfigError,
)
from zonal_core.config import ENV_TOPOLOGY, ENV_TOPOLOGY_FILE, build_config
from zonal_core.metrics import otel, prometheus
from zonal_sqlalchemy import ZonalPool

SOURCES = ("url", "zones", "file", "provider")


class Evidence:
    """Everything a user could see: printed text, log output, scrapes."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, label: str, value: object) -> None:
        text = value if isinstance(value, str) else repr(value)
        self.parts.append(f"--- {label}\n{text}")
        print(f"{label}: {text[:300]}")

    def error(self, label: str, err: BaseException) -> None:
        self.add(f"{label} str", str(err))
        self.add(f"{label} repr", repr(err))
        self.add(f"{label} traceback", "".join(traceback.format_exception(err)))

    def text(self) -> str:
        return "\n".join(self.parts)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every logger at DEBUG into one buffer, tracebacks included."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    saved = root.level, {n: lg.level for n, lg in logging.Logger.manager.loggerDict.items()
                         if isinstance(lg, logging.Logger)}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("sqlalchemy", "psycopg", "zonal"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


def secret_forms(*passwords: str) -> set[str]:
    out = set()
    for pw in passwords:
        out |= {pw, quote(pw, safe=""), quote(pw)}
    return out


def make_source(lab: Any, source: str, password: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """The URL and create_engine options that carry ``password`` in ``source``."""
    user, db = lab.user, lab.database
    zones = lab.zones(pgbouncer=False)
    if source == "url":
        return f"postgresql+psycopg://{user}:{quote(password, safe='')}@/{db}", {"zones": zones}
    if source == "zones":
        with_pw = {z: f"{user}:{password}@{ep}" for z, ep in zones.items()}
        return f"postgresql+psycopg://{user}@/{db}", {"zones": with_pw}
    if source == "file":
        f = tmp_path / f"topology-{secrets.token_hex(4)}.json"
        f.write_text(json.dumps({"zones": {z: {"endpoints": [{
            "host": ep.rsplit(":", 1)[0], "port": int(ep.rsplit(":", 1)[1]),
            "user": user, "password": password}]} for z, ep in zones.items()}}))
        monkeypatch.setenv(ENV_TOPOLOGY_FILE, str(f))
        return f"postgresql+psycopg://{user}@/{db}", {}
    assert source == "provider"
    return f"postgresql+psycopg://{user}@/{db}", {"zones": zones, "password": lambda: password}


_names = iter(range(10**6))


def engine(url: str, options: dict[str, Any], made: list[Engine], **more: Any) -> Engine:
    opts = {"local_zone": "a", "connect_timeout": 1, "pool_timeout": 3,
            "name": f"secrets-{next(_names)}", "echo": "debug", "echo_pool": "debug",
            **options, **more}
    e = create_engine(url, poolclass=ZonalPool, **opts)
    made.append(e)
    return e


def scrape(e: Engine, ev: Evidence, label: str) -> None:
    pool: Any = e.pool
    registry = CollectorRegistry()
    collector = prometheus.register(pool, registry)
    ev.add(f"{label} prometheus", generate_latest(registry).decode())
    collector.unregister()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = otel.instrument(pool, provider)
    data = reader.get_metrics_data()
    ev.add(f"{label} otel", data.to_json() if data is not None else "")
    if hasattr(handle, "stop"):
        handle.stop()
    provider.shutdown()
    stats = pool.stats()
    for what, value in [("pool", pool), ("status", pool.status()), ("core", pool.core),
                        ("config", pool.config), ("config str", str(pool.config)),
                        ("as_dict", pool.config.as_dict()), ("stats", stats),
                        ("stats dict", stats.as_dict()), ("topology", pool.config.topology),
                        ("zones", pool.config.zones), ("engine", e), ("url", e.url),
                        ("url str", str(e.url))]:
        ev.add(f"{label} {what}", value)
    for z in pool.config.topology.zones:
        for ep in z.endpoints:
            ev.add(f"{label} endpoint", (repr(ep), str(ep), ep.display(), ep.key))


def expect(ev: Evidence, label: str, kinds: tuple[type[BaseException], ...],
           fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except kinds as err:
        ev.error(label, err)
        return err
    raise AssertionError(f"{label}: no error")


def query(e: Engine, sql: str = "SELECT 1") -> Any:
    with e.connect() as c:
        return c.execute(text(sql)).scalar()


@pytest.mark.parametrize("source", SOURCES)
def test_no_password_anywhere(source: str, zonal_lab: Any, logs: io.StringIO, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    lab = zonal_lab(zones=["a", "b"])
    good = lab.password
    wrong = "Wr0ng:p@ss/" + secrets.token_urlsafe(12)  # URL-hostile characters on purpose
    ev = Evidence()
    made: list[Engine] = []
    caught_warnings: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught_warnings:
            warnings.simplefilter("always")
            url, options = make_source(lab, source, good, tmp_path, monkeypatch)

            # the happy path, a leak report, then metrics and reprs
            e = engine(url, options, made, leak_threshold=0.05, query_timeout=0.3,
                       pool_size=1, pool_pre_ping=True, ping_bypass=0)
            assert query(e) == 1
            held = e.connect()
            ev.add("record", held.connection._connection_record)  # type: ignore[attr-defined]
            ev.add("fairy", held.connection)
            time.sleep(0.15)
            # PoolTimeout: the pool's one connection is held
            expect(ev, "pool timeout", (PoolTimeout, exc.TimeoutError),
                   lambda: e.connect().close())
            held.close()
            # QueryTimeout
            err = expect(ev, "query timeout", (exc.OperationalError,),
                         lambda: query(e, "SELECT pg_sleep(2)"))
            assert isinstance(getattr(err, "orig", None), QueryTimeout)
            assert query(e) == 1
            scrape(e, ev, "after errors")

            # NoHealthyZone: every zone refuses
            for z in lab:
                z.proxy.refuse()
                z.proxy.reset()
            down = engine(url, options, made, pool_timeout=2)
            expect(ev, "no healthy zone", (NoHealthyZone, PoolTimeout, exc.TimeoutError),
                   lambda: query(down))
            scrape(down, ev, "all down")
            lab.reset_faults()

            # authentication failure with a wrong password from the same source
            url_w, options_w = make_source(lab, source, wrong, tmp_path, monkeypatch)
            bad = engine(url_w, options_w, made)
            expect(ev, "auth failure", (exc.OperationalError, NoHealthyZone, PoolTimeout,
                                        exc.TimeoutError), lambda: query(bad))
            scrape(bad, ev, "auth failed")

            # configuration errors with the password in the same source
            for label, more in [("bad pool_size", {"pool_size": 0}),
                                ("bad local_zone", {"local_zone": "nowhere"}),
                                ("bad option", {"pool_sise": 3}),
                                ("bad query_timeout", {"query_timeout": "soon"})]:
                expect(ev, label, (ZonalConfigError, TypeError, exc.ArgumentError),
                       lambda more=more: engine(url, options, made, **more))
            monkeypatch.delenv(ENV_TOPOLOGY_FILE, raising=False)
            broken = json.dumps({"zones": {"a": f"{lab.user}:{good}@h:0"}})
            expect(ev, "bad ZONAL_TOPOLOGY", (ZonalConfigError,),
                   lambda: build_config(environ={ENV_TOPOLOGY: broken}))
            expect(ev, "unparsable ZONAL_TOPOLOGY", (ZonalConfigError,),
                   lambda: build_config(environ={ENV_TOPOLOGY: broken[:-3] + good}))
            f = tmp_path / "broken.json"
            f.write_text('{"zones": {"a": "u:' + good + '@h:1",}}')
            expect(ev, "unparsable file", (ZonalConfigError,),
                   lambda: build_config(environ={ENV_TOPOLOGY_FILE: str(f)}))
            expect(ev, "conflicting host", (ZonalConfigError,),
                   lambda: engine(f"postgresql+psycopg://{lab.user}:{good}@127.0.0.1/x",
                                  {"zones": lab.zones()}, made))
    finally:
        for e in made:
            e.dispose()
        lab.reset_faults()

    for w in caught_warnings:
        ev.add("warning", str(w.message))
    out = capsys.readouterr()
    everything = "\n".join([ev.text(), logs.getvalue(), out.out, out.err])
    sys.stdout.write(out.out[-2000:])
    assert "borrowed for" in logs.getvalue(), "the leak report was not exercised"
    assert "password authentication failed" in everything, "the auth path was not exercised"
    leaked = sorted(f for f in secret_forms(good, wrong) if f in everything)
    assert not leaked, f"{source}: a password appears in what a user sees"
    print(f"\n{source}: {len(everything):,} characters of logs, errors, reprs and scrapes "
          f"searched: no password")


def test_the_search_would_find_a_leak() -> None:
    """The search itself works: a password put in on purpose is found."""
    pw = secrets.token_urlsafe(12)
    ev = Evidence()
    ev.add("planted", f"connect failed for app:{quote(pw, safe='')}@h")
    assert any(f in ev.text() for f in secret_forms(pw))


def test_provider_threads_see_no_password_in_errors(zonal_lab: Any, logs: io.StringIO) -> None:
    """A provider that raises, from several threads at once: the error names the
    provider's failure, never a previous token."""
    lab = zonal_lab(zones=["a", "b"])
    token = lab.password
    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("token service unavailable")
        return token

    e = create_engine(f"postgresql+psycopg://{lab.user}@/{lab.database}", poolclass=ZonalPool,
                      zones=lab.zones(pgbouncer=False), local_zone="a", password=provider,
                      connect_timeout=1, pool_timeout=0.5, pool_size=4)
    errors: list[str] = []

    def worker() -> None:
        try:
            with e.connect() as c:
                c.execute(text("SELECT 1"))
                time.sleep(1.5)  # the others cannot wait for this one
        except Exception as err:
            errors.append("".join(traceback.format_exception(err)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    e.dispose()
    assert not any(t.is_alive() for t in threads)
    assert errors, "every thread but one needed a new token"
    blob = "\n".join(errors) + logs.getvalue()
    assert "token service unavailable" in blob
    assert token not in blob and quote(token, safe="") not in blob


def test_a_failing_provider_ejects_no_zone() -> None:
    """Minimal reproduction (no database needed: the provider fails before any I/O).
    A token service that is down says nothing about the database zones; expected:
    the provider's error reaches the caller and no zone is ejected. Today each
    attempt counts against the endpoint, so zones get ejected (and traffic stays
    away from the local zone until failback after the token service recovers)."""
    from zonal_core.pool import ZonedPool
    from zonal_core.psycopg_driver import PsycopgDriver

    def provider() -> str:
        raise RuntimeError("token service unavailable")

    config = build_config(zones={"a": "127.0.0.1:9", "b": "127.0.0.2:9"}, local_zone="a",
                          password=provider, timeout=1, environ={})
    pool = ZonedPool(PsycopgDriver({"user": "app", "dbname": "db"}, config), config)
    try:
        with pytest.raises(CredentialError, match="token service") as ei:
            pool.getconn()
        assert isinstance(ei.value.__cause__, RuntimeError)
    finally:
        stats = pool.stats()
        pool.close()
    assert {z: s.ejections for z, s in stats.zones.items()} == {"a": 0, "b": 0}
