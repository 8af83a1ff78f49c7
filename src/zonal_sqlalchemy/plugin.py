"""``?plugin=zonal``: zonal for code that only passes a URL around.

``create_engine("postgresql+psycopg://app:secret@/appdb?plugin=zonal", zones=...)``
sets the pool class (:class:`ZonalPool`, or :class:`ZonalAsyncPool` for asyncio
dialects). zonal's options come as ``create_engine`` keywords or as URL query
parameters prefixed ``zonal_`` (``&zonal_local_zone=a&zonal_zones={"a":"h:5432"}``),
which are taken out of the connect arguments before the driver sees them. Query values
are read as JSON where they parse (numbers, booleans, objects), else as text.

``engine.url`` keeps ``plugin=zonal`` and the ``zonal_*`` parameters, so
``create_engine(engine.url)`` builds a zonal engine again; options passed as
keywords are not copied into the URL (they may carry secrets): give them again, or
through ``ZONAL_TOPOLOGY`` / ``ZONAL_TOPOLOGY_FILE``. With ``pool=`` (a pool of your
own) the plugin sets no pool class.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import CreateEnginePlugin
from sqlalchemy.engine.url import URL

from zonal_core.config import OPTIONS
from zonal_core.errors import ZonalConfigError
from zonal_sqlalchemy.pool import ZonalAsyncPool, ZonalPool

__all__ = ["ZonalPlugin"]

PREFIX = "zonal_"


def _value(key: str, raw: str | tuple[str, ...]) -> Any:
    if isinstance(raw, tuple):
        raise ZonalConfigError(key, "given more than once in the URL", fix=f"one {key}=...")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class ZonalPlugin(CreateEnginePlugin):
    """The ``sqlalchemy.plugins`` entry point ``zonal``."""

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        backend = url.get_backend_name()
        if backend != "postgresql":
            raise ZonalConfigError(
                "plugin", f"zonal pools PostgreSQL connections; this URL is {backend!r}",
                fix="drop ?plugin=zonal from a non-PostgreSQL URL")
        self.url_options: dict[str, Any] = {}
        # With a pool of the user's own (pool=...), zonal stays out of the way.
        self.own_pool = "pool" in kwargs
        for key, raw in url.query.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX):]
            if name not in OPTIONS:
                raise ZonalConfigError(key, "is not a zonal option",
                                       fix="see zonal's configuration table")
            self.url_options[name] = _value(key, raw)
        if "poolclass" in kwargs and not issubclass(kwargs["poolclass"], ZonalPool):
            raise ZonalConfigError("poolclass", f"?plugin=zonal with poolclass="
                                   f"{kwargs['poolclass'].__name__}", fix="drop poolclass")
        # create_engine reserves ``timeout`` and ``pre_ping`` for its own
        # pool_timeout / pool_pre_ping; through the plugin zonal's names work too.
        for name in ("timeout", "pre_ping"):
            if name in kwargs:
                self.url_options[name] = kwargs.pop(name)
        if not self.own_pool:
            is_async = bool(getattr(url.get_dialect(), "is_async", False))
            kwargs.setdefault("poolclass", ZonalAsyncPool if is_async else ZonalPool)

    def handle_pool_kwargs(self, pool_cls: type[Any], pool_args: dict[str, Any]) -> None:
        for name, value in self.url_options.items():
            if name in pool_args and pool_args[name] != value:
                raise ZonalConfigError(name, "given twice (URL, keyword or pool_* alias)",
                                       fix="give it once")
            pool_args[name] = value

    def update_url(self, url: URL) -> URL:
        # create_engine drops ``plugin`` from the URL it keeps; zonal puts it back,
        # with the ``zonal_*`` options that came in the URL, so that
        # ``create_engine(engine.url)`` (code that only passes a URL around) gets
        # zonal again. The pool's connect hook takes both out before the driver
        # sees them. (Options given as keywords are not copied into the URL: they
        # may carry secrets.)
        if self.own_pool:
            return url.difference_update_query([k for k in url.query if k.startswith(PREFIX)])
        return url.update_query_dict({"plugin": "zonal"})
