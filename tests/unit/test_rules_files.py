"""[[rules.files]]: the operator's file rules on a tree like the real dashboard's data/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from architect_cleanup.config import ConfigError, parse_config
from architect_cleanup.stats import CleanupStats
from architect_cleanup.targets import Decision
from architect_cleanup.worker import CleanupWorker

from conftest import DAY, HOUR, NOW, touch

DB_COPIES = {"name": "db-copies", "dirs": ["data"], "patterns": ["architect.db.backup.*"],
             "max_age": "14d", "keep_newest": 2}
DUPLICATES = {"name": "finder-duplicates", "dirs": ["data"], "patterns": ["* 2.db", "* 2.*"],
              "max_age": "1d"}


def config(srv: Path, *rules: dict[str, Any], **sections: Any) -> Any:
    raw: dict[str, Any] = {"root": str(srv), "environments": ["prod", "qa"],
                           "logs": {"tmp_dir": ""}, "rules": {"files": list(rules)}}
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(raw)


def run(srv: Path, *rules: dict[str, Any], dry_run: bool = False,
        only: tuple[str, ...] = ("rules",), decisions: list[Decision] | None = None,
        **sections: Any) -> CleanupStats:
    cfg = config(srv, *rules, **sections)
    return CleanupWorker(dry_run=dry_run, config=cfg, now=NOW, only=only,
                         on_decision=decisions.append if decisions is not None else None,
                         record_state=False).run_cleanup()


def dashboard_data(srv: Path) -> dict[str, Path]:
    """The real dashboard's data/: live databases with their WAL, timestamped copies with
    their -wal/-shm beside them, Finder duplicates, logs, a temp file, real backups."""
    d = srv / "data"
    p: dict[str, Path] = {}
    for env in ("prod", "qa"):
        for suffix in ("", "-wal", "-shm"):
            p[f"{env}.live{suffix}"] = touch(d / env / f"architect.db{suffix}", 40 * DAY, 10)
    for i, age in enumerate((1, 3, 20, 30, 60)):
        stamp = f"2026110{i}_120000"
        for suffix in ("", "-wal", "-shm"):
            p[f"copy{i}{suffix}"] = touch(d / f"architect.db.backup.{stamp}{suffix}",
                                          age * DAY, 100)
    p["bugs 2.db"] = touch(d / "bugs 2.db", 5 * DAY, 7)
    p["bugs.db"] = touch(d / "bugs.db", 5 * DAY, 7)
    p["notes 2.txt"] = touch(d / "prod" / "notes 2.txt", 5 * DAY, 3)
    p["young 2.db"] = touch(d / "young 2.db", HOUR, 3)
    p["app.log"] = touch(d / "app.log", 40 * DAY, 5)
    p["x.tmp"] = touch(d / "x.tmp", 40 * DAY, 5)
    p["backup"] = touch(d / "prod" / "backups" / "architect_20260101_000000.db.backup.1",
                        90 * DAY, 5)
    return p


def test_old_backup_copies_go_with_their_wal_and_shm_and_the_newest_two_stay(
        srv: Path) -> None:
    p = dashboard_data(srv)
    stats = run(srv, DB_COPIES)
    for i in (0, 1):  # newest two, whatever their age
        assert all(p[f"copy{i}{s}"].exists() for s in ("", "-wal", "-shm"))
    for i in (2, 3, 4):  # older than 14 days
        assert not any(p[f"copy{i}{s}"].exists() for s in ("", "-wal", "-shm"))
    assert all(p[f"{env}.live{s}"].exists() for env in ("prod", "qa")
               for s in ("", "-wal", "-shm"))
    rules = stats.targets["rules"]
    assert rules.removed == 3 and rules.bytes == 3 * 300
    assert rules.detail["db-copies"]["removed"] == 3
    assert stats.summary_line().endswith("0 temp files, 3 by rules")


def test_a_copy_whose_wal_a_process_holds_open_stays_with_its_wal_and_shm(
        srv: Path) -> None:
    p = dashboard_data(srv)
    with open(p["copy3-wal"], "rb"):
        stats = run(srv, DB_COPIES)
    assert all(p[f"copy3{s}"].exists() for s in ("", "-wal", "-shm"))
    assert not any(p[f"copy4{s}"].exists() for s in ("", "-wal", "-shm"))
    assert stats.targets["rules"].skipped == 1


def test_finder_duplicates_go_and_their_originals_stay(srv: Path) -> None:
    p = dashboard_data(srv)
    stats = run(srv, DUPLICATES)
    assert not p["bugs 2.db"].exists() and not p["notes 2.txt"].exists()
    assert p["bugs.db"].exists()
    assert p["young 2.db"].exists()  # within max_age
    assert stats.targets["rules"].removed == 2


def test_a_dry_run_counts_what_a_real_run_removes_and_changes_nothing(srv: Path) -> None:
    p = dashboard_data(srv)
    before = {k: v.stat().st_ino for k, v in p.items()}
    dry = run(srv, DB_COPIES, DUPLICATES, dry_run=True)
    assert {k: v.stat().st_ino for k, v in p.items()} == before
    real = run(srv, DB_COPIES, DUPLICATES)
    d, r = dry.targets["rules"], real.targets["rules"]
    assert (d.removed, d.bytes) == (r.removed, r.bytes) == (5, 3 * 300 + 7 + 3)


def test_names_a_built_in_target_owns_are_never_taken_by_a_rule(srv: Path) -> None:
    p = dashboard_data(srv)
    greedy = {"name": "greedy", "dirs": ["data"], "patterns": ["*.log", "*.tmp", "*.backup.*"],
              "max_age": "1d"}
    decisions: list[Decision] = []
    stats = run(srv, greedy, decisions=decisions)
    assert p["app.log"].exists() and p["x.tmp"].exists() and p["backup"].exists()
    # the copies in data/ are nobody else's: the rule takes those (all but the 1-day one)
    assert stats.targets["rules"].removed == 4
    assert not p["copy4"].exists() and p["copy0"].exists()
    owners = {os.path.basename(d.path): d.reason for d in decisions if not d.remove}
    assert owners["app.log"] == "rule greedy: owned by logs"
    assert owners["x.tmp"] == "rule greedy: owned by temp"
    assert owners["architect_20260101_000000.db.backup.1"] == "rule greedy: owned by backups"


def test_a_disabled_built_in_target_owns_nothing_so_the_rule_takes_its_names(
        srv: Path) -> None:
    p = dashboard_data(srv)
    greedy = {"name": "greedy", "dirs": ["data"], "patterns": ["*.log"], "max_age": "1d"}
    run(srv, greedy, logs={"enabled": False})
    assert not p["app.log"].exists()


def test_the_first_rule_owns_a_name_two_rules_match(srv: Path) -> None:
    dashboard_data(srv)
    first = {"name": "first", "dirs": ["data"], "patterns": ["bugs 2.db"], "max_age": "30d"}
    stats = run(srv, first, DUPLICATES)
    assert (srv / "data" / "bugs 2.db").exists()  # first's: 5 days < 30 days
    assert stats.targets["rules"].detail["finder-duplicates"]["removed"] == 1  # notes 2.txt


def test_keep_newest_counts_per_directory(srv: Path) -> None:
    for env in ("prod", "qa"):
        for i in range(4):
            touch(srv / "data" / env / "exports" / f"e{i}.csv", (10 + i) * DAY, 1)
    rule = {"name": "exports", "dirs": ["data"], "patterns": ["*.csv"], "max_age": "1d",
            "keep_newest": 1}
    run(srv, rule)
    for env in ("prod", "qa"):
        assert sorted(os.listdir(srv / "data" / env / "exports")) == ["e0.csv"]


def test_max_total_size_removes_the_oldest_until_the_rest_fit(srv: Path) -> None:
    for i in range(5):
        touch(srv / "data" / "dumps" / f"d{i}.sql", (i + 1) * HOUR, 100)
    rule = {"name": "dumps", "dirs": ["data/dumps"], "patterns": ["*.sql"],
            "max_total_size": 250}
    stats = run(srv, rule)
    assert sorted(os.listdir(srv / "data" / "dumps")) == ["d0.sql", "d1.sql"]
    assert stats.targets["rules"].removed == 3


def test_a_file_some_process_holds_open_is_kept(srv: Path) -> None:
    p = dashboard_data(srv)
    with open(p["copy4"], "rb"):
        stats = run(srv, DB_COPIES)
    assert p["copy4"].exists() and p["copy4-wal"].exists()
    assert not p["copy3"].exists()
    assert stats.targets["rules"].skipped == 1


def test_a_rule_never_enters_an_excluded_directory(srv: Path) -> None:
    touch(srv / "data" / "chrome_profile_1" / "Cache 2.db", 9 * DAY)
    run(srv, DUPLICATES)
    assert (srv / "data" / "chrome_profile_1" / "Cache 2.db").exists()


def test_directories_go_whole_with_type_dir(srv: Path) -> None:
    old = srv / "data" / "sessions" / "s-old"
    touch(old / "state.json", 10 * DAY, 4)
    touch(old / "inner" / "x.bin", 10 * DAY, 6)
    young = srv / "data" / "sessions" / "s-new"
    touch(young / "state.json", HOUR)
    for p in (old / "inner", old):
        os.utime(p, (NOW.timestamp() - 10 * DAY,) * 2)
    rule = {"name": "session-dirs", "dirs": ["data/sessions"], "patterns": ["s-*"],
            "type": "dir", "max_age": "7d"}
    stats = run(srv, rule)
    assert not old.exists() and young.exists()
    assert stats.targets["rules"].removed == 2 and stats.targets["rules"].bytes == 10


def test_compress_replaces_old_files_by_verified_zst_copies_with_their_mtime(
        srv: Path) -> None:
    log_dir = srv / "var" / "requests"
    old = touch(log_dir / "requests-2026-10-01.txt", 30 * DAY, data=b"GET /\n" * 1000)
    young = touch(log_dir / "requests-2026-11-26.txt", HOUR, data=b"GET /\n")
    rule = {"name": "requests", "dirs": ["var/requests"], "patterns": ["requests-*.txt"],
            "max_age": "7d", "action": "compress"}
    stats = run(srv, rule)
    zst = log_dir / "requests-2026-10-01.txt.zst"
    assert not old.exists() and zst.exists() and young.exists()
    assert zst.stat().st_mtime == pytest.approx(NOW.timestamp() - 30 * DAY)
    import zstandard
    assert zstandard.ZstdDecompressor().decompress(zst.read_bytes()) == b"GET /\n" * 1000
    assert stats.targets["rules"].removed == 1
    again = run(srv, rule)  # a .zst is not compressed again
    assert again.targets["rules"].removed == 0


def test_a_rule_outside_root_works_only_where_allowed(srv: Path, tmpdir_: Path) -> None:
    session_log = touch(tmpdir_ / "architect_session_abc.log", 10 * DAY)
    other = touch(tmpdir_ / "someone_else.log", 10 * DAY)
    rule = {"name": "session-logs", "dirs": [str(tmpdir_)],
            "patterns": ["architect_session_*.log"], "max_age": "3d"}
    with pytest.raises(ConfigError, match="outside root"):
        config(srv, rule)
    run(srv, rule, rules={"allowed_outside_root": [str(tmpdir_)]})
    assert not session_log.exists() and other.exists()


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["architect.db*", "*.db", "*-wal", "data", "?"])
def test_a_rule_pattern_that_matches_a_database_or_the_data_directory_is_refused(
        srv: Path, pattern: str) -> None:
    with pytest.raises(ConfigError, match="never remove wholesale"):
        config(srv, {"name": "x", "dirs": ["data"], "patterns": [pattern], "max_age": "1d"})


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "x", "dirs": ["data"], "patterns": ["*.bak"]}, "max_age or max_total_size"),
    ({"name": "x", "dirs": ["../etc"], "patterns": ["*.bak"], "max_age": "1d"}, "'..'"),
    ({"name": "x", "dirs": ["data"], "patterns": ["*.bak"], "max_age": "1d",
      "action": "shred"}, "must be one of"),
    ({"name": "x", "dirs": ["data"], "patterns": ["*.bak"], "max_age": "1d", "type": "dir",
      "action": "compress"}, 'only type = "file"'),
    ({"dirs": ["data"], "patterns": ["*.bak"], "max_age": "1d"}, "name: missing"),
    ({"name": "x", "dirs": ["data"], "patterns": ["*.bak"], "max_age": "1d", "colour": 1},
     "colour: unknown key"),
])
def test_a_wrong_rule_is_refused_in_words(srv: Path, rule: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        config(srv, rule)
    assert all(p.startswith("rules.files[0]") for p in exc.value.problems)


@pytest.mark.parametrize("outside", ["/", "/etc", "/usr/lib", "/var/lib/x", "relative"])
def test_allowed_outside_root_refuses_system_directories(srv: Path, outside: str) -> None:
    with pytest.raises(ConfigError, match=r"rules\.allowed_outside_root"):
        config(srv, rules={"allowed_outside_root": [outside]})


def test_two_rules_may_not_share_a_name(srv: Path) -> None:
    with pytest.raises(ConfigError, match="used by an earlier rule"):
        config(srv, DUPLICATES, DUPLICATES)


def test_session_logs_in_tmp_are_the_logs_targets_and_the_one_being_written_stays(
        srv: Path, tmpdir_: Path) -> None:
    """The dashboard's per-session logs (/tmp/architect_*.log) are the built-in logs
    target's: old ones go, the one a running process writes stays, and a rule that names
    them owns none of them."""
    old = touch(tmpdir_ / "architect_session_a1.log", 40 * DAY)
    writing = touch(tmpdir_ / "architect_session_b2.log", 40 * DAY)
    young = touch(tmpdir_ / "architect_session_c3.log", DAY)
    rule = {"name": "sessions", "dirs": [str(tmpdir_)], "patterns": ["architect_session_*"],
            "max_age": "1d"}
    sections: dict[str, Any] = {"rules": {"allowed_outside_root": [str(tmpdir_)]},
                                "logs": {"tmp_dir": str(tmpdir_)}}
    with open(writing, "ab"):
        stats = run(srv, rule, only=("logs", "rules"), **sections)
    assert not old.exists() and writing.exists() and young.exists()
    assert stats.targets["logs"].removed == 1 and stats.targets["logs"].skipped == 1
    assert stats.targets["rules"].removed == 0


def test_config_check_lists_every_rule_with_what_it_owns(srv: Path, tmp_path: Path) -> None:
    import io
    import json

    from architect_cleanup import cli

    conf = tmp_path / "config.toml"
    conf.write_text(f'root = "{srv}"\n' '''
[[rules.files]]
name = "db-copies"
dirs = ["data"]
patterns = ["architect.db.backup.*"]
max_age = "14d"
keep_newest = 2

[[rules.files]]
name = "finder-duplicates"
dirs = ["data"]
patterns = ["* 2.db"]
max_age = "7d"

[[rules.tables]]
name = "health"
database = "data/{env}/architect.db"
table = "llm_provider_health"
time_column = "checked_at"
max_age = "14d"
''')
    out = io.StringIO()
    assert cli.main(["--config", str(conf), "config", "check"], out) == 0
    text = out.getvalue()
    assert "# rules.files[0] db-copies: delete files named architect.db.backup.* below data" \
        in text
    owned = [line for line in text.splitlines() if line.startswith("#   owns")]
    assert "logs (*.log" in owned[0] and "temp (*.tmp" in owned[0]
    assert "the configured databases" in owned[0]
    assert "rule db-copies" in owned[1] and "rule db-copies" not in owned[0]
    assert "# rules.tables[0] health: delete rows of llm_provider_health in " \
           "data/prod/architect.db" in text
    out = io.StringIO()
    assert cli.main(["--config", str(conf), "config", "check", "--json"], out) == 0
    assert len(json.loads(out.getvalue())["rules"]) == 5


def test_one_failing_rule_fails_the_target_and_the_others_still_run(
        srv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup.targets import rules as rules_mod

    p = dashboard_data(srv)
    real = rules_mod.claimed_before

    def broken(cfg: Any, index: int) -> Any:
        if index == 0:
            raise OSError("a broken first rule")
        return real(cfg, index)

    monkeypatch.setattr(rules_mod, "claimed_before", broken)
    stats = run(srv, DB_COPIES, DUPLICATES)
    rules = stats.targets["rules"]
    assert rules.failed and "db-copies" in rules.message
    assert not p["bugs 2.db"].exists() and p["copy4"].exists()
