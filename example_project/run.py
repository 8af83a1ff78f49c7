"""Run an example app against three local zones, with one command.

::

    python example_project/run.py fastapi            # http://127.0.0.1:8000
    python example_project/run.py django             # http://127.0.0.1:8001
    python example_project/run.py fastapi --check    # start, try every URL, kill a zone, stop

It starts three PostgreSQL zones on loopback (``zonal_lab``, named as in
``topology.toml``), creates the ``items`` table in each (``schema.sql``), writes a
copy of ``topology.toml`` whose ``[zones]`` point at them, sets
``ZONAL_TOPOLOGY_FILE`` and ``DATABASE_URL`` and serves the app with uvicorn on
127.0.0.1. Ctrl-C stops the app and the zones. Needs ``pip install -e ".[example]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
APPS = {
    "fastapi": (HERE / "fastapi_app", "main:app", 8000),
    "django": (HERE / "django_project", "exampleproject.asgi:application", 8001),
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def lab_topology(template: dict[str, Any], zones: dict[str, str]) -> str:
    """``topology.toml``'s options with the lab's zone endpoints."""
    lines = ["# topology.toml with the [zones] of a local lab (written by run.py)"]
    lines += [f"{key} = {_toml_value(v)}" for key, v in template.items() if key != "zones"]
    lines.append("")
    lines.append("[zones]")
    lines += [f"{json.dumps(name)} = {json.dumps(ep)}" for name, ep in zones.items()]
    return "\n".join(lines) + "\n"


def prepare(lab: Any, template: dict[str, Any], folder: Path) -> dict[str, str]:
    """Schema in every zone, the topology file and the environment of the app."""
    schema = (HERE / "schema.sql").read_text()
    for zone in lab:
        with zone.connect(autocommit=True) as conn:
            conn.execute(schema)
    topology = folder / "topology.toml"
    topology.write_text(lab_topology(template, lab.zones(pgbouncer=False)))
    url = (f"postgresql://{quote(lab.user, safe='')}:{quote(lab.password, safe='')}"
           f"@/{quote(lab.database, safe='')}")
    env = {"ZONAL_TOPOLOGY_FILE": str(topology), "DATABASE_URL": url}
    envfile = folder / "env"
    envfile.write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    envfile.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return env


def fetch(base: str, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def check(base: str, lab: Any, local: str, zone_of_port: dict[int, str]) -> bool:
    """Every URL once, then the local zone killed: the app keeps answering."""
    ok = True

    def step(label: str, path: str, method: str = "GET", want: int = 200,
             contains: str = "") -> str:
        nonlocal ok
        status, body = fetch(base, path, method)
        good = status == want and contains in body
        ok = ok and good
        print(f"  {'ok ' if good else 'BAD'} {method} {path} -> {status}  {label}"
              + ("" if good else f"\n      {body[:300]}"), flush=True)
        return body

    step("index", "/")
    step("insert (committed by the middleware)", "/items?name=hello", "POST", 201, "hello")
    step("list", "/items", contains="hello")
    served = json.loads(step("which zone answered", "/zone"))
    print(f"      served by zone {zone_of_port.get(served.get('server_port'), '?')}")
    step("Prometheus metrics", "/metrics", contains="db_client_connection_count")
    print(f"  killing the local zone {local} ...", flush=True)
    lab[local].kill()
    time.sleep(0.6)  # past ping_bypass: the idle connection is pinged, found dead, replaced
    for i in range(3):
        served = json.loads(step(f"after {local} was killed ({i + 1}/3)", "/zone"))
        where = zone_of_port.get(served.get("server_port"), "?")
        print(f"      served by zone {where}; new connections go to "
              f"{served.get('preferred_zone')}")
        ok = ok and where not in ("?", local)
    states = json.loads(step("pool state", "/pool", contains='"ejected"'))
    print("      " + ", ".join(f"{name} {z['state']}" for name, z in states["zones"].items()))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python example_project/run.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, default=None,
                        help="port on 127.0.0.1 (default 8000 fastapi, 8001 django; 0: any)")
    parser.add_argument("--check", action="store_true",
                        help="try every URL, kill the local zone, try again, then stop")
    args = parser.parse_args(argv)

    try:
        import uvicorn

        from zonal_lab import Lab
    except ImportError as e:
        print(f"run.py: {e.name} is missing (fix: python3 -m pip install -e '.[example]')",
              file=sys.stderr)
        return 2

    folder, target, default_port = APPS[args.app]
    port = (0 if args.check else default_port) if args.port is None else args.port
    template = tomllib.loads((HERE / "topology.toml").read_text())
    names = list(template["zones"])
    local = str(template.get("local_zone", names[0]))
    print(f"starting zones {', '.join(names)} (PostgreSQL on 127.0.0.1) ...", flush=True)
    with Lab(zones=names) as lab, tempfile.TemporaryDirectory(prefix="zonal-example-") as tmp:
        env = prepare(lab, template, Path(tmp))
        os.environ.update(env)
        sys.path.insert(0, str(folder))
        config = uvicorn.Config(target, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on" if args.app == "fastapi" else "off")
        server = uvicorn.Server(config)
        result = {"ok": True}
        zone_of_port = {z.postgres.port: z.name for z in lab}

        def announce() -> None:
            for _ in range(300):  # up to 30 s for the server to start
                if server.started or server.should_exit:
                    break
                time.sleep(0.1)
            if not server.started:
                return
            bound = server.servers[0].sockets[0].getsockname()[1]
            base = f"http://127.0.0.1:{bound}"
            print(f"{args.app} app on {base}  (zones from {env['ZONAL_TOPOLOGY_FILE']})")
            for path in ("/", "/items", "/zone", "/pool", "/metrics"):
                print(f"  {base}{path}")
            print(f"  curl -X POST '{base}/items?name=hello'")
            print(f"  for a shell with the same settings: source {tmp}/env", flush=True)
            if args.check:
                try:
                    result["ok"] = check(base, lab, local, zone_of_port)
                finally:
                    server.should_exit = True
            else:
                print("Ctrl-C stops the app and the zones.", flush=True)

        threading.Thread(target=announce, daemon=True).start()
        server.run()
        if args.check and not server.started:
            result["ok"] = False
        print("stopping the zones", flush=True)
    if args.check:
        print("check: " + ("OK" if result["ok"] else "FAILED"))
        return 0 if result["ok"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
