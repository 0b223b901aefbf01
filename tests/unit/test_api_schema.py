"""The POST body's schema: strict JSON, per-key checks, every offending key at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_bodies import ENVIRONMENTS, bodies, is_real_run, offending_keys
from hypothesis import given, settings

from architect_cleanup.api_schema import (
    MAX_BODY,
    CleanupRequest,
    RequestInvalid,
    parse_body,
    validate,
)

TARGETS = ["backups", "logs", "tasks", "errors", "prompts", "temp"]


def check(doc: Any) -> CleanupRequest:
    return validate(doc, environments=ENVIRONMENTS, targets=TARGETS)


def problems(doc: Any) -> list[str]:
    with pytest.raises(RequestInvalid) as info:
        check(doc)
    return info.value.problems


def test_an_empty_object_is_a_dry_run_with_the_configured_values() -> None:
    req = check({})
    assert req == CleanupRequest()
    assert req.dry_run is True
    assert req.worker_args() == {"dry_run": True, "backup_retention": None,
                                 "log_age_days": None, "task_age_days": None,
                                 "error_age_days": None, "prompt_age_days": None, "only": None}


def test_the_seeds_body_is_accepted_as_it_is() -> None:
    req = check({"dry_run": True, "backup_retention": 10, "log_age_days": 30,
                 "task_age_days": 7, "error_age_days": 30, "prompt_age_days": 14})
    assert (req.backup_retention, req.log_age_days, req.task_age_days, req.error_age_days,
            req.prompt_age_days) == (10, 30, 7, 30, 14)


def test_only_a_literal_false_asks_for_a_real_run() -> None:
    assert check({"dry_run": False}).dry_run is False
    for not_false in (0, 0.0, "false", None, [], {}):
        assert problems({"dry_run": not_false})[0].startswith("dry_run: must be true or false")


def test_a_number_for_dry_run_is_explained() -> None:
    assert problems({"dry_run": 0}) == [
        "dry_run: must be true or false, not the number 0 (a real run needs a literal false)"]


def test_a_retention_table_names_configured_environments_only() -> None:
    assert check({"backup_retention": {"prod": 15, "default": 4}}).backup_retention == {
        "prod": 15, "default": 4}
    assert problems({"backup_retention": {"staging": 3, "prod": 0}}) == [
        "backup_retention: 'staging' is not a configured environment (choose from prod, qa, "
        "dev, test, default); prod: 0 is below the minimum of 1"]


@pytest.mark.parametrize("key", ["log_age_days", "task_age_days", "error_age_days",
                                 "prompt_age_days"])
def test_ages_are_whole_days_from_1_to_36500(key: str) -> None:
    assert getattr(check({key: 1}), key) == 1
    assert getattr(check({key: 36500}), key) == 36500
    assert problems({key: 0}) == [f"{key}: 0 is below the minimum of 1"]
    assert problems({key: 36501}) == [f"{key}: 36501 is above the maximum of 36500"]
    assert problems({key: 2.5}) == [f"{key}: must be a whole number, not 2.5"]
    assert problems({key: True}) == [f"{key}: must be a whole number, not a boolean"]
    assert problems({key: None}) == [f"{key}: must be a whole number, not null"]


def test_targets_are_distinct_known_names() -> None:
    assert check({"targets": ["logs", "temp"]}).worker_args()["only"] == ("logs", "temp")
    assert problems({"targets": []}) == ["targets: must name at least one target"]
    assert problems({"targets": ["logs", "logs"]}) == ["targets: names a target twice"]
    assert problems({"targets": ["nope"]})[0].startswith("targets: unknown target(s) 'nope'")


def test_every_offending_key_is_reported_at_once() -> None:
    with pytest.raises(RequestInvalid) as info:
        check({"dry_run": 0, "keep": 3, "log_age_days": -1, "targets": "logs",
               "task_age_days": 7})
    assert info.value.keys == ["dry_run", "keep", "log_age_days", "targets"]
    assert len(info.value.problems) == 4


@pytest.mark.parametrize("raw,expected", [
    (b"", {}), (b"  \n", {}), (b'{"dry_run": false}', {"dry_run": False}),
    (b"[1]", [1]), (b"null", None)])
def test_parse_body_reads_json_and_an_empty_body_as_an_empty_object(raw: bytes,
                                                                     expected: Any) -> None:
    assert parse_body(raw) == expected


@pytest.mark.parametrize("raw", [b"{", b"NaN", b'{"a": -Infinity}', b"\xc3\x28",
                                 b"[" * 50_000, b"1" * 5000, b"{} {}"])
def test_parse_body_refuses_what_is_not_strict_json(raw: bytes) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_body(raw)
    assert info.value.keys == ["body"]


def test_the_body_limit_is_64_kib() -> None:
    assert MAX_BODY == 65536


@settings(max_examples=1000, deadline=None)
@given(bodies(TARGETS))
def test_the_schema_accepts_exactly_the_valid_bodies(doc: Any) -> None:
    """Property: whatever JSON arrives, the offending keys are exactly the oracle's, and a
    request that passes is a dry run unless the body said a literal false."""
    expected = offending_keys(doc, TARGETS)
    try:
        req = check(parse_body(json.dumps(doc).encode()))
    except RequestInvalid as exc:
        assert exc.keys == expected
        assert len(exc.problems) == len(expected)
    else:
        assert expected == []
        assert req.dry_run is (not is_real_run(doc))
