"""The run plan: what a run will do, decided before anything runs."""

from __future__ import annotations

from architect_cleanup.config import Config
from architect_cleanup.runplan import plan_run


def config(**sections: dict[str, object]) -> Config:
    from architect_cleanup.config import parse_config
    return parse_config({"root": "/srv/architect", **sections})


def test_logs_and_temp_share_one_walk_that_runs_at_the_first_of_them() -> None:
    plan = plan_run(Config(), None)
    assert plan.describe() == ["backups: backups", "logs: logs/temp", "tasks: tasks",
                               "errors: errors", "prompts: prompts", "temp: logs/temp",
                               "rules: not_configured", "orphans: disabled"]
    by_name = {s.name: s for s in plan.slots}
    assert by_name["logs"].step is by_name["temp"].step


def test_an_unselected_target_is_not_selected_and_a_disabled_one_is_disabled() -> None:
    plan = plan_run(config(tasks={"enabled": False}, errors={"enabled": False}),
                    ["backups", "tasks"])
    assert plan.describe() == ["backups: backups", "logs: not_selected", "tasks: disabled",
                               "errors: not_selected", "prompts: not_selected",
                               "temp: not_selected", "rules: not_selected",
                               "orphans: not_selected"]


def test_an_enabled_but_unselected_tree_target_keeps_its_names_in_the_walk() -> None:
    plan = plan_run(Config(), ["temp"])
    (walk,) = [s.step for s in plan.slots if s.name == "temp"]
    assert walk is not None and walk.names == ("temp",)
    assert plan.describe()[1] == "logs: not_selected"


def test_the_rules_target_runs_only_when_a_rule_is_written() -> None:
    rule = {"name": "r", "dirs": ["data"], "patterns": ["*.bak"], "max_age": "1d"}
    assert plan_run(config(rules={"files": [rule]}), None).describe()[6] == "rules: rules"
    plan = plan_run(config(rules={"files": [rule], "enabled": False}), None)
    assert plan.describe()[6] == "rules: disabled"


def test_no_walk_is_planned_when_no_tree_target_is_chosen() -> None:
    plan = plan_run(config(logs={"enabled": False}), ["backups", "logs"])
    assert plan.describe() == ["backups: backups", "logs: disabled", "tasks: not_selected",
                               "errors: not_selected", "prompts: not_selected",
                               "temp: not_selected", "rules: not_selected",
                               "orphans: not_selected"]
