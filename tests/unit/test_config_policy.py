"""Configuration of backup retention policies: lookup order, validation, round trip, overrides."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from architect_cleanup.config import (
    Config,
    ConfigError,
    parse_config,
    parse_free_space,
    parse_size,
    with_overrides,
)
from architect_cleanup.retention import FreeFloor, Policy, Span

GIB = 1024**3


def backups(**keys: object) -> Config:
    return parse_config({"backups": keys})


def problems(**keys: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        backups(**keys)
    return info.value.problems


def test_a_plain_number_per_environment_works_exactly_as_before() -> None:
    cfg = backups(retention={"prod": 20})
    assert cfg.backups.policy_for("prod") == (Policy(keep_last=20), "backups.retention.prod")
    assert cfg.backups.policy_for("qa") == (Policy(keep_last=5), "backups.retention.qa")
    assert cfg.backups.policy_for("default") == (Policy(keep_last=5),
                                                 "backups.retention.default")
    assert cfg.backups.keep_for("prod") == 20
    assert cfg.backups.policy == {}


def test_the_first_that_exists_wins_policy_env_retention_env_policy_default_retention_default(
        ) -> None:
    cfg = backups(policy={"prod": {"keep_daily": 7}, "default": {"keep_weekly": 4}},
                  retention={"qa": 9, "default": 2})
    b = cfg.backups
    assert b.policy_for("prod") == (Policy(keep_daily=7), "backups.policy.prod")
    assert b.policy_for("qa") == (Policy(keep_last=9), "backups.retention.qa")
    assert b.policy_for("dev") == (Policy(keep_weekly=4), "backups.policy.default")
    assert b.policy_for("default") == (Policy(keep_weekly=4), "backups.policy.default")


def test_a_policy_wins_over_a_number_for_the_same_environment() -> None:
    cfg = backups(policy={"prod": {"keep_daily": 7}}, retention={"prod": 10})
    assert cfg.backups.policy_for("prod")[1] == "backups.policy.prod"


def test_a_default_policy_replaces_the_built_in_numbers_but_not_written_ones() -> None:
    cfg = backups(policy={"default": {"keep_daily": 7}}, retention={"test": 2})
    assert cfg.backups.policy_for("prod")[1] == "backups.policy.default"  # built-in 10 yields
    assert cfg.backups.policy_for("test") == (Policy(keep_last=2), "backups.retention.test")


def test_without_any_default_policy_the_built_in_numbers_still_apply() -> None:
    cfg = backups(policy={"qa": {"keep_daily": 7}})
    assert cfg.backups.policy_for("prod") == (Policy(keep_last=10), "backups.retention.prod")


def test_every_policy_key_is_read() -> None:
    cfg = backups(policy={"prod": {
        "keep_last": 2, "keep_hourly": 24, "keep_daily": 7, "keep_weekly": 4,
        "keep_monthly": 12, "keep_yearly": 3, "keep_within": "2d", "max_total_size": "5G",
        "min_free_space": "15%", "keep_min": 5}})
    assert cfg.backups.policy["prod"] == Policy(
        keep_last=2, keep_hourly=24, keep_daily=7, keep_weekly=4, keep_monthly=12,
        keep_yearly=3, keep_within=Span(2), max_total_size=5 * GIB,
        min_free_space=FreeFloor(percent=15.0), keep_min=5)


@pytest.mark.parametrize(("text", "size"), [
    ("500M", 500 * 1024**2), ("5G", 5 * GIB), ("1.5T", 1536 * GIB), ("5GiB", 5 * GIB),
    ("64k", 64 * 1024), (" 2 G ", 2 * GIB), ("1000", 1000), (4096, 4096)])
def test_sizes_are_binary_units(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "message"), [
    ("5GB", "binary units"), ("five", "is not a size"), ("0", "larger than 0"),
    ("-1G", "is not a size"), (True, "not a boolean"), (1.5, "not a number")])
def test_bad_sizes_are_refused(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


def test_free_space_is_a_percentage_or_a_size() -> None:
    assert parse_free_space("15%") == FreeFloor(percent=15.0)
    assert parse_free_space("2.5%") == FreeFloor(percent=2.5)
    assert parse_free_space("20G") == FreeFloor(bytes=20 * GIB)
    assert FreeFloor(percent=15).need(1000) == 150
    assert FreeFloor(bytes=7).need(1000) == 7
    for bad in ("0%", "100%", "x%"):
        with pytest.raises(ValueError):
            parse_free_space(bad)


def test_a_policy_that_keeps_nothing_is_an_error() -> None:
    (p,) = problems(policy={"prod": {"max_total_size": "5G", "min_free_space": "10%"}})
    assert p.startswith("backups.policy.prod: keeps nothing but the newest backup: set at "
                        "least one of keep_last, keep_hourly, keep_daily, keep_weekly, "
                        "keep_monthly, keep_yearly, keep_within")
    (p,) = problems(policy={"default": {"keep_daily": 0}})
    assert p.startswith("backups.policy.default: keeps nothing")


def test_every_policy_problem_is_reported_at_once() -> None:
    found = problems(policy={
        "prod": {"keep_dayly": 7, "keep_daily": -1, "keep_min": 0, "keep_within": "soon",
                 "max_total_size": "5GB", "min_free_space": "150%"},
        "staging": {"keep_last": 3},
        "qa": {"keep_last": "3"}})
    assert found == [
        "backups.policy.prod.keep_daily: must be >= 0",
        "backups.policy.prod.keep_within: 'soon' is not a duration (use e.g. \"30d\", \"12h\", "
        "\"90m\", \"45s\")",
        "backups.policy.prod.max_total_size: '5GB' is not a size (use e.g. \"500M\", \"5G\", "
        "\"1.5T\") (binary units: write \"5G\" or \"5GiB\")",
        "backups.policy.prod.min_free_space: '150%': a percentage must be above 0% and below "
        "100%",
        "backups.policy.prod.keep_min: 0 would let min_free_space delete every backup; must be "
        ">= 1 (the newest backup is always kept)",
        "backups.policy.prod.keep_dayly: unknown key (did you mean keep_daily?)",
        "backups.policy.staging: not a configured environment (environments = "
        "['prod', 'qa', 'dev', 'test'])",
        "backups.policy.qa.keep_last: must be a whole number, not a string",
    ]


def test_a_policy_must_be_a_table() -> None:
    (p,) = problems(policy={"prod": 7})
    assert p == "backups.policy.prod: must be a table, not a number"


def test_the_effective_config_round_trips_through_toml() -> None:
    cfg = backups(policy={"prod": {"keep_daily": 7, "keep_within": "36h",
                                   "max_total_size": "1.5T", "min_free_space": "15%",
                                   "keep_min": 4},
                          "default": {"keep_weekly": 4, "min_free_space": "20G"}},
                  retention={"qa": 3})
    doc = cfg.to_dict()
    assert doc["backups"]["policy"]["prod"] == {
        "keep_daily": 7, "keep_within": "36h", "max_total_size": "1536G",
        "min_free_space": "15%", "keep_min": 4}
    assert doc["backups"]["retention"] == {"default": 5, "qa": 3}
    assert parse_config(tomllib.loads(tomli_w.dumps(doc))) == cfg


def test_the_keep_override_replaces_every_policy_with_the_newest_n() -> None:
    cfg = backups(policy={"prod": {"keep_daily": 7}, "default": {"keep_weekly": 4}})
    over = with_overrides(cfg, keep=3)
    for env in ("prod", "qa", "dev", "test", "default"):
        assert over.backups.policy_for(env)[0] == Policy(keep_last=3)


def test_a_per_environment_override_replaces_only_that_environments_policy() -> None:
    cfg = backups(policy={"prod": {"keep_daily": 7}, "qa": {"keep_weekly": 4}})
    over = with_overrides(cfg, keep={"prod": 12})
    assert over.backups.policy_for("prod") == (Policy(keep_last=12), "backups.retention.prod")
    assert over.backups.policy_for("qa")[0] == Policy(keep_weekly=4)
