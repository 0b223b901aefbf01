"""Configuration: defaults, validation (every problem at once), drop-ins, overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from architect_cleanup.config import (
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
    with_overrides,
)


def problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_defaults_are_the_documented_ones() -> None:
    cfg = parse_config({})
    assert cfg == Config()
    assert cfg.root == "/srv/architect"
    assert cfg.environments == ("prod", "qa", "dev", "test")
    assert cfg.dry_run is True
    assert dict(cfg.backups.retention) == {"prod": 10, "qa": 5, "dev": 5, "test": 3,
                                           "default": 5}
    assert cfg.backups.min_age == timedelta(hours=1)
    assert cfg.logs.max_age == timedelta(days=30)
    assert cfg.tasks.max_age == timedelta(days=7)
    assert cfg.errors.max_age == timedelta(days=30)
    assert cfg.prompts.max_age == timedelta(days=14)
    assert cfg.temp.min_age == timedelta(hours=1)
    assert cfg.database.batch_size == 1000


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 1209600),
    ("1h30m", 5400), (" 7D ", 7 * 86400), ("0s", 0),
])
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "1.5d", "-1d", "30 days", "1y", "h1"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_every_problem_is_reported_at_once_as_section_key() -> None:
    found = problems({
        "root": "relative/path",
        "dry_run": "no",
        "backups": {"retention": {"prod": 0, "qa": "five"}, "min_age": "soon"},
        "logs": {"max_age": 30, "patterns": ["../*.log"]},
        "database": {"batch_size": 0, "naive_timezone": "mars"},
        "tasks": {"tables": ["task queue"]},
        "safety": {"skip_open_files": 1},
        "bogus": {},
    })
    text = "\n".join(found)
    for expected in [
        "root: 'relative/path': must be an absolute path",
        "dry_run: must be true or false",
        "backups.retention.prod: 0 would delete every backup; must be >= 1",
        "backups.retention.qa: must be a whole number",
        "backups.min_age: 'soon' is not a duration",
        "logs.max_age: must be a duration string",
        "logs.patterns: patterns match file names",
        "database.batch_size: must be >= 1",
        "database.naive_timezone: 'mars'",
        "tasks.tables: invalid table name",
        "safety.skip_open_files: must be true or false",
        "bogus: unknown key",
    ]:
        assert expected in text, f"missing {expected!r} in:\n{text}"


def test_a_typo_in_a_key_is_an_error_not_a_silent_default() -> None:
    assert problems({"logs": {"max_agee": "3d"}}) == [
        "logs.max_agee: unknown key (did you mean max_age?)"]
    assert problems({"safety": {"skip_open_file": False}}) == [
        "safety.skip_open_file: unknown key (did you mean skip_open_files?)"]
    assert problems({"logs": {"colour": "red"}}) == ["logs.colour: unknown key"]


def test_an_unknown_key_in_a_drop_in_names_that_file(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text('root = "/srv/architect"\n[logs]\nmax_age = "30d"\n')
    (tmp_path / "config.d").mkdir()
    drop_in = tmp_path / "config.d" / "50-local.toml"
    drop_in.write_text('dry_runn = false\n[logs]\nmax_agee = "3d"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(main), environ={})
    assert sorted(err.value.problems) == [
        f"dry_runn: unknown key (did you mean dry_run?) (in {drop_in})",
        f"logs.max_agee: unknown key (did you mean max_age?) (in {drop_in})"]


def test_retention_for_an_unknown_environment_is_an_error() -> None:
    assert "backups.retention.prdo: not a configured environment" in problems(
        {"backups": {"retention": {"prdo": 20}}})[0]


@pytest.mark.parametrize("root", ["/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64",
                                  "/boot", "/dev", "/proc", "/sys", "/run", "/var", "/home",
                                  "/var/", "//etc", "/usr/../etc"])
def test_system_directories_are_refused_as_root(root: str) -> None:
    assert any("refusing to clean a system directory" in p for p in problems({"root": root}))


@pytest.mark.parametrize("root", ["/srv/architect/current", "/var/www/architect",
                                  "/home/dash/architect", "/opt/architect", "/data/architect"])
def test_paths_outside_system_trees_are_allowed_as_root(root: str) -> None:
    assert parse_config({"root": root}).root == root


@pytest.mark.parametrize("root", ["/var/lib/architect", "/usr/local/architect", "/opt",
                                  "/opt/vendor/architect", "/root/x", "/boot/efi", "/etc/ssl",
                                  "/var/log/architect", "/lib/x"])
def test_paths_in_system_trees_are_refused_as_root(root: str) -> None:
    assert any(p.startswith("root: ") and "system tree" in p
               for p in problems({"root": root}))


def test_a_symlink_root_pointing_at_a_system_directory_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "srv"
    link.symlink_to("/etc")
    assert any("system directory" in p for p in problems({"root": str(link)}))


@pytest.mark.parametrize(("key", "value"), [
    ("logs", {"dirs": ["/var/log"]}), ("logs", {"dirs": ["data/../../etc"]}),
    ("temp", {"dirs": ["../"]}), ("database", {"paths": ["/etc/x.db"]}),
    ("logs", {"tmp_dir": "/"}), ("logs", {"tmp_dir": "tmp"}),
    ("backups", {"dir": "data/backups"}),
])
def test_paths_must_stay_inside_root(key: str, value: dict[str, object]) -> None:
    assert problems({key: value})


def test_drop_ins_merge_in_name_order_over_the_main_file(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text('root = "/srv/a"\n[logs]\nmax_age = "10d"\n[backups.retention]\nprod = 20\n')
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "20-b.toml").write_text('[logs]\nmax_age = "40d"\n')
    (tmp_path / "config.d" / "10-a.toml").write_text(
        '[logs]\nmax_age = "20d"\ndirs = ["x"]\n[backups.retention]\nqa = 7\n')
    (tmp_path / "config.d" / "ignored.conf").write_text("not toml at all [")
    cfg = load_config(str(main))
    assert cfg.logs.max_age == timedelta(days=40)
    assert cfg.logs.dirs == ("x",)
    assert cfg.backups.retention["prod"] == 20
    assert cfg.backups.retention["qa"] == 7
    assert cfg.sources == (str(main), str(tmp_path / "config.d" / "10-a.toml"),
                           str(tmp_path / "config.d" / "20-b.toml"))


def test_explicit_path_wins_over_environment_variable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('root = "/srv/a"\n')
    b.write_text('root = "/srv/b"\n')
    env = {"ARCHITECT_CLEANUP_CONFIG": str(b)}
    assert load_config(None, env).root == "/srv/b"
    assert load_config(str(a), env).root == "/srv/a"


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(str(tmp_path / "nope.toml"))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("root = \n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(str(bad))


def test_overrides_apply_to_every_environment_or_merge_a_table() -> None:
    cfg = with_overrides(Config(), keep=15, log_days=60, task_days=14)
    assert set(cfg.backups.retention.values()) == {15}
    assert cfg.logs.max_age == timedelta(days=60)
    assert cfg.tasks.max_age == timedelta(days=14)
    cfg = with_overrides(Config(), keep={"prod": 15, "qa": 10})
    assert dict(cfg.backups.retention) == {"prod": 15, "qa": 10, "dev": 5, "test": 3,
                                           "default": 5}


def test_overrides_that_would_delete_every_backup_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"prod: 0 would delete every backup"):
        with_overrides(Config(), keep={"prod": 0})
    with pytest.raises(ConfigError, match=r"logs\.max_age"):
        with_overrides(Config(), log_days=0)


def test_effective_config_round_trips_through_its_own_dict() -> None:
    cfg = parse_config({"logs": {"max_age": "36h"}, "backups": {"retention": {"prod": 4}}})
    assert parse_config(cfg.to_dict()) == cfg
    assert cfg.to_dict()["logs"]["max_age"] == "36h"


@pytest.mark.parametrize("text", ["36501d", "99999999999999999999d", "5300w"])
def test_durations_beyond_100_years_are_refused_not_a_crash(text: str) -> None:
    with pytest.raises(ValueError, match="longer than 36500d"):
        parse_duration(text)
    assert any("logs.max_age" in p for p in problems({"logs": {"max_age": text}}))


def test_an_absurd_size_is_refused_not_a_crash() -> None:
    found = problems({"backups": {"policy": {"prod": {"keep_last": 3,
                                                      "max_total_size": "9" * 400 + "G"}}}})
    assert any("too large" in p for p in found)


def test_a_configuration_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_bytes(b'root = "/srv/\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(f))


@pytest.mark.parametrize("days", [1e12, float("inf"), float("nan"), -1, 0, True])
def test_absurd_age_overrides_are_config_errors(days: float) -> None:
    with pytest.raises(ConfigError, match=r"logs\.max_age"):
        with_overrides(Config(), log_days=days)
