"""Configuration problems, holds and policy kinds are typed values, rendered as before."""

from __future__ import annotations

import pytest

from architect_cleanup.config import Config, ConfigError, Problem, parse_config, with_overrides
from architect_cleanup.retention import Policy, PolicyKind
from architect_cleanup.targets.base import Hold


def test_a_config_problem_is_a_key_and_a_message_rendered_key_colon_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"logs": {"max_age": 3, "nope": 1}})
    assert info.value.found == (
        Problem("logs.max_age", 'must be a duration string like "30d", not a number'),
        Problem("logs.nope", "unknown key"))
    assert info.value.problems == [str(p) for p in info.value.found]
    assert info.value.problems[1] == "logs.nope: unknown key"


def test_an_override_problem_names_the_key_it_overrides() -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), keep={"prod": 0}, log_days=-1)
    assert [p.key for p in info.value.found] == ["backups.retention.prod", "logs.max_age"]


def test_a_plain_retention_number_is_a_newest_policy_that_keeps_what_keep_last_keeps() -> None:
    policy, source = Config().backups.policy_for("prod")
    assert policy.kind is PolicyKind.NEWEST and source == "backups.retention.prod"
    assert policy == Policy(keep_last=10) and Policy(keep_last=10).kind is PolicyKind.RULES


def test_a_hold_reads_as_its_reason() -> None:
    assert f"{Hold.FUTURE} (not counted)" == "modified in the future (not counted)"
    assert str(Hold.OPEN) == "open by a running process"
