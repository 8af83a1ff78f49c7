"""``zonal size``'s math, with concrete numbers; no database."""

from __future__ import annotations

import argparse
import json

import pytest

from zonal_tools import sizing
from zonal_tools.sizing import SizingError, cpu_bound, size


def test_cpu_bound_is_the_classic_formula() -> None:
    assert cpu_bound(1) == 3
    assert cpu_bound(8) == 17
    assert cpu_bound(8, spindles=4) == 20


def test_direct_budget_is_shared_across_instances() -> None:
    plan = size(db_max_connections=200, instances=40, reserved=10, cores=8)
    assert plan.pool_size == 4  # (200 - 10) // 40 = 4, below the CPU bound 17
    assert plan.fits
    assert plan.numbers["available"] == 190
    assert plan.numbers["per_instance_budget"] == 4
    assert plan.numbers["cpu_bound"] == 17
    assert plan.numbers["system_total"] == 160  # 40 x 4, never per process
    assert "190 // 40 = 4" in plan.steps[1]
    assert "40 x 4 = 160 of 190" in plan.steps[-1]
    assert "30 to spare" in plan.steps[-1]


def test_cpu_bound_caps_a_generous_budget() -> None:
    plan = size(db_max_connections=500, instances=2, reserved=0, cores=2)
    assert plan.numbers["per_instance_budget"] == 250
    assert plan.pool_size == 5  # (2 x 2) + 1
    assert "min(250, 5) = 5" in plan.steps[-1]


def test_cores_default_to_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    plan = size(db_max_connections=1000, instances=1)
    assert plan.numbers["cores"] == 3
    assert plan.pool_size == 7
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert size(db_max_connections=1000, instances=1).numbers["cores"] == 1


def test_too_many_instances_for_a_direct_database() -> None:
    plan = size(db_max_connections=20, instances=40, reserved=3, cores=4)
    assert plan.pool_size == 0
    assert not plan.fits
    assert plan.numbers["per_instance_budget"] == 0
    assert "40 instances need at least 40 connections" in plan.problems[0]
    assert "only 17 are free" in plan.problems[0]
    assert "PgBouncer" in plan.problems[0]


def test_pool_size_one_is_a_warning() -> None:
    plan = size(db_max_connections=50, instances=40, reserved=5, cores=4)
    assert plan.pool_size == 1
    assert plan.fits
    assert plan.warnings and "one query at a time" in plan.warnings[0]


def test_zones_add_no_room_without_pgbouncer() -> None:
    one = size(db_max_connections=200, instances=40, reserved=10, cores=8)
    three = size(db_max_connections=200, instances=40, reserved=10, cores=8, zones=3)
    assert one.pool_size == three.pool_size == 4
    assert any("zones add no room" in s for s in three.steps)


def test_pgbouncer_bounds_the_server_side_and_max_client_conn_the_client_side() -> None:
    plan = size(
        db_max_connections=200,
        instances=40,
        reserved=10,
        cores=8,
        pgbouncer_pool_size=20,
        pgbouncer_reserve_pool=5,
        max_client_conn=1000,
        zones=3,
    )
    # server side: 3 PgBouncers x (20 + 5) = 75 of 190 free
    assert plan.numbers["server_total"] == 75
    # client side: ceil(40 / 3) = 14 per PgBouncer, 28 after a zone is lost
    assert plan.numbers["instances_per_pgbouncer"] == 28
    assert plan.numbers["client_budget"] == 1000 // 28 == 35
    # min(cpu 17, PgBouncer pool 20, client budget 35)
    assert plan.pool_size == 17
    assert plan.numbers["clients_per_pgbouncer"] == 28 * 17
    assert plan.fits
    assert "= 75 server connections of 190 free" in plan.steps[1]


def test_pgbouncer_pool_caps_the_client_pool() -> None:
    plan = size(
        db_max_connections=100, instances=4, reserved=0, cores=16, pgbouncer_pool_size=6
    )
    assert plan.pool_size == 6  # more than PgBouncer's 6 would only wait inside it
    # max_client_conn unknown: say what it must be
    assert plan.numbers["max_client_conn_needed"] == 24
    assert any("max_client_conn >= 24" in s for s in plan.steps)
    assert not plan.warnings  # 24 is within PgBouncer's default of 100


def test_pgbouncer_default_max_client_conn_too_small_is_a_warning() -> None:
    plan = size(db_max_connections=200, instances=40, reserved=10, cores=2, pgbouncer_pool_size=20)
    assert plan.pool_size == 5
    assert plan.numbers["max_client_conn_needed"] == 200
    assert "at least 200" in plan.warnings[0]


def test_pgbouncer_with_too_few_client_slots_is_a_problem() -> None:
    plan = size(
        db_max_connections=200,
        instances=300,
        reserved=10,
        cores=2,
        pgbouncer_pool_size=20,
        max_client_conn=100,
    )
    assert plan.pool_size == 0
    assert "300 instances at one PgBouncer" in plan.problems[0]
    assert "raise max_client_conn to 1500" in plan.problems[0]


def test_pgbouncer_pool_larger_than_the_server_is_a_problem() -> None:
    plan = size(
        db_max_connections=100, instances=10, reserved=10, cores=2, pgbouncer_pool_size=40, zones=3
    )
    # 3 x 40 = 120 server connections > 90 free
    assert plan.numbers["server_total"] == 120
    assert not plan.fits
    assert "lower default_pool_size to 30" in plan.problems[0]


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"db_max_connections": 200, "instances": 40, "reserved": 200}, "--reserved", "not below"),
        ({"db_max_connections": 200, "instances": 40, "reserved": 250}, "--reserved", "not below"),
        ({"db_max_connections": 0, "instances": 1}, "--db-max-connections", "at least 1"),
        ({"db_max_connections": 10, "instances": 0}, "--instances", "at least 1"),
        ({"db_max_connections": 10, "instances": 1, "reserved": -1}, "--reserved", "at least 0"),
        ({"db_max_connections": 10, "instances": 1, "cores": 0}, "--cores", "at least 1"),
        ({"db_max_connections": 10, "instances": 1, "zones": 0}, "--zones", "at least 1"),
        (
            {"db_max_connections": 10, "instances": 1, "pgbouncer_pool_size": 0},
            "--pgbouncer-pool-size",
            "at least 1",
        ),
        (
            {"db_max_connections": 10, "instances": 1, "max_client_conn": 50},
            "--pgbouncer-pool-size",
            "is needed",
        ),
        ({"db_max_connections": 300_000, "instances": 1}, "--db-max-connections", "at most"),
        ({"db_max_connections": True, "instances": 1}, "--db-max-connections", "whole number"),
    ],
)
def test_impossible_inputs_are_clear_errors(kwargs: dict[str, int], field: str, text: str) -> None:
    with pytest.raises(SizingError) as info:
        size(**kwargs)
    assert info.value.field == field
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


def _args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sizing.add_arguments(parser)
    args = parser.parse_args(["--db-max-connections", "200", "--instances", "40"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_run_prints_steps_and_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert sizing.run(_args(reserved=10, cores=8)) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. The database takes 200 connections")
    assert "=> pool_size=4, max_total=4 per instance" in out


def test_run_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert sizing.run(_args(reserved=10, cores=8, json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pool_size"] == 4
    assert doc["fits"] is True
    assert doc["exit_code"] == 0
    assert doc["numbers"]["available"] == 190


def test_run_exit_2_when_nothing_fits_or_inputs_are_impossible(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sizing.run(_args(db_max_connections=20, reserved=3, cores=2)) == 2
    assert "no pool size fits" in capsys.readouterr().out
    assert sizing.run(_args(reserved=200)) == 2
    err = capsys.readouterr().err
    assert err.startswith("zonal size: error: --reserved: 200 is not below --db-max-connections")
    assert sizing.run(_args(reserved=200, json=True)) == 2
    assert json.loads(capsys.readouterr().out)["field"] == "--reserved"
