"""The options have one owner (zonal_core.options and zonal_core.config); the docs and
the adapters follow it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from zonal_core.config import DEFAULTS, build_config, parse_option
from zonal_core.errors import ZonalConfigError
from zonal_core.options import EXTRA, HELP, OPTIONS, TABLE, markdown_table
from zonal_lab.pytest_plugin import require_module

ROOT = Path(__file__).resolve().parent.parent


def test_docs_and_readme_show_the_owners_tables() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for text in (docs, readme):
        assert markdown_table() in text
        assert markdown_table(EXTRA) in text


def test_every_option_is_documented_and_parsed() -> None:
    assert set(HELP) == OPTIONS - {"topology"}
    assert set(TABLE) | set(EXTRA) == set(HELP)
    for name in DEFAULTS:
        assert name in OPTIONS
    config = build_config(zones={"a": "h:5432"}, environ={})
    for name in set(TABLE) - {"zones"}:
        assert hasattr(config, name)


def test_zonal_pool_takes_every_option_by_name() -> None:
    """create_engine hands a pool class only the keywords its __init__ names."""
    require_module("sqlalchemy")
    from zonal_sqlalchemy import ZonalPool

    params = set(inspect.signature(ZonalPool.__init__).parameters)
    assert params >= OPTIONS


@pytest.mark.parametrize(("value", "mode"), [
    (True, "transaction"), ("yes", "transaction"), ("Transaction", "transaction"),
    ("session", "session"), (False, False), ("off", False), (None, False),
])
def test_one_pgbouncer_parser_for_every_consumer(value: object, mode: object) -> None:
    from zonal_core.drivers import connect_kwargs

    assert parse_option("pgbouncer", value) == mode
    # the driver rules read the same parser: "yes" is transaction mode there too
    kwargs = connect_kwargs("psycopg", pgbouncer=value, user_kwargs={})  # type: ignore[arg-type]
    assert ("prepare_threshold" in kwargs) == (mode == "transaction")
    with pytest.raises(ZonalConfigError, match="pgbouncer"):
        parse_option("pgbouncer", "txn")
