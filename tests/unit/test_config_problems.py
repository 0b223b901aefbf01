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


def test_every_configuration_key_declares_how_it_is_read_and_what_it_is_for() -> None:
    import dataclasses

    from architect_cleanup.config import Config
    sections = [f.metadata["section"] for f in dataclasses.fields(Config)
                if "section" in f.metadata]
    assert len(sections) >= 9, "backups ... safety, notify (and any added since)"
    for cls in (Config, *sections):
        for f in dataclasses.fields(cls):
            if f.name != "sources":
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
                assert "read" in f.metadata or "section" in f.metadata, f.name


def test_the_api_checks_ages_against_the_configurations_bound() -> None:
    from architect_cleanup import api_schema, config
    assert api_schema.MAX_DAYS is config.MAX_DAYS
    assert config.MAX_DURATION_S == config.MAX_DAYS * 86400
