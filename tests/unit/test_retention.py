"""Pure retention: calendar rules (restic 0.14 semantics), size budget, free-space floor."""

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from retention_cases import BERLIN, CASES, DAY, Case, every, mtime

from architect_cleanup.config import parse_config
from architect_cleanup.retention import (
    Backup,
    FloorGroup,
    FreeFloor,
    Policy,
    PolicyError,
    Span,
    Verdict,
    apply_budget,
    apply_rules,
    free_space_pass,
    keep_newest,
    select,
)

MB = 1024 * 1024


def policy_of(keys: dict[str, object]) -> Policy:
    """A policy read the way the configuration reads it."""
    cfg = parse_config({"backups": {"policy": {"prod": keys}}})
    return cfg.backups.policy["prod"]


def backups_of(case: Case, size: int = MB) -> list[Backup[str]]:
    return [Backup(n, mtime(n, case.zone), size, n) for n in case.backups]


def kept(verdicts: list[Verdict[str]]) -> dict[str, str]:
    return {v.backup.name: v.reason for v in verdicts if v.keep}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rules_keep_exactly_the_listed_backups_for_the_listed_reasons(case: Case) -> None:
    verdicts = apply_rules(backups_of(case), policy_of(case.policy), ZoneInfo(case.zone),
                           "prod")
    assert kept(verdicts) == case.keep
    assert len(verdicts) == len(case.backups)
    for v in verdicts:
        if not v.keep:
            assert v.reason.startswith("no rule of prod keeps it (")


def test_verdicts_come_newest_first_and_name_the_policy_when_removing() -> None:
    bs = [Backup(n, mtime(n, BERLIN), 1, n) for n in every("2026-11-20 03:00",
                                                           "2026-11-23 03:00", DAY)]
    verdicts = apply_rules(bs, Policy(keep_last=1, keep_weekly=1), ZoneInfo(BERLIN), "prod")
    assert [v.backup.name for v in verdicts] == sorted((b.name for b in bs), reverse=True)
    assert verdicts[-1].reason == "no rule of prod keeps it (last 1, weekly 1)"


def test_bucketing_follows_the_zone_passed_in_not_the_host() -> None:
    # 23:30 in New York on 2026-11-19 is 04:30 UTC on the 20th.
    names = ["2026-11-20 04:30+00:00", "2026-11-21 04:30+00:00"]
    bs = [Backup(n, mtime(n, "UTC"), 1, n) for n in names]
    ny = kept(apply_rules(bs, Policy(keep_daily=2), ZoneInfo("America/New_York"), "x"))
    utc = kept(apply_rules(bs, Policy(keep_daily=2), UTC, "x"))
    assert sorted(ny.values()) == ["daily 2026-11-19", "daily 2026-11-20"]
    assert sorted(utc.values()) == ["daily 2026-11-20", "daily 2026-11-21"]


def test_no_backups_give_no_verdicts() -> None:
    assert apply_rules([], Policy(keep_last=3), UTC, "prod") == []


def test_a_policy_without_rules_keeps_everything_as_restic_does() -> None:
    bs = [Backup(str(i), float(i), 1, str(i)) for i in range(3)]
    assert all(v.keep for v in apply_rules(bs, Policy(), UTC, "prod"))


def test_keep_newest_is_unchanged_for_the_plain_number() -> None:
    bs = [Backup(str(i), float(i), 1, str(i)) for i in range(4)]
    out = keep_newest(bs, 2, "prod")
    assert [(v.backup.name, v.keep, v.reason) for v in out] == [
        ("3", True, "newest backup of prod"), ("2", True, "newest 2 of prod"),
        ("1", False, "beyond the newest 2 of prod"), ("0", False, "beyond the newest 2 of prod")]


def test_the_plain_number_and_keep_last_keep_the_same_backups() -> None:
    bs = [Backup(f"b{i:02d}", 1000.0 + (i // 3), 1, f"b{i:02d}") for i in range(20)]
    legacy = {v.backup.name for v in keep_newest(bs, 7, "prod") if v.keep}
    assert {v.backup.name for v in select(bs, Policy.newest(7), UTC, "prod") if v.keep} == legacy


# --- keep_within spans ---------------------------------------------------------------------

def test_a_span_of_days_is_calendar_days_on_the_wall_clock() -> None:
    berlin = ZoneInfo(BERLIN)
    newest = mtime("2026-03-29 12:00", BERLIN)  # CEST; the day before was CET
    assert newest - Span(days=1).cutoff(newest, berlin) == 23 * 3600
    newest = mtime("2026-10-25 12:00", BERLIN)  # CET; the day before was CEST
    assert newest - Span(days=1).cutoff(newest, berlin) == 25 * 3600
    assert newest - Span(seconds=86400).cutoff(newest, berlin) == 24 * 3600


@pytest.mark.parametrize(("text", "span", "shown"), [
    ("7d", Span(7), "7d"), ("2w", Span(14), "14d"), ("36h", Span(0, 129600), "36h"),
    ("1d12h", Span(1, 43200), "1d12h"), ("90m", Span(0, 5400), "1h30m")])
def test_keep_within_reads_days_apart_from_hours(text: str, span: Span, shown: str) -> None:
    assert policy_of({"keep_within": text}).keep_within == span
    assert str(span) == shown
    assert policy_of({"keep_within": shown}).keep_within == span


# --- max_total_size --------------------------------------------------------------------------


def sized(*sizes_mb: float) -> list[Backup[str]]:
    """Backups newest first with the given sizes (in MB), one day apart."""
    return [Backup(f"b{i}", 1_000_000.0 - i * 86400, int(s * MB), f"b{i}")
            for i, s in enumerate(sizes_mb)]


def test_the_budget_removes_the_oldest_kept_until_the_rest_fits() -> None:
    bs = sized(3, 3, 3, 3, 3)  # 15 MiB kept by keep_last 5
    out = select(bs, Policy(keep_last=5, max_total_size=10 * MB), UTC, "prod")
    assert [v.keep for v in out] == [True, True, True, False, False]
    assert out[4].reason == "over max_total_size 10.0 MiB (kept set 15.0 MiB)"
    assert out[3].reason == "over max_total_size 10.0 MiB (kept set 12.0 MiB)"
    assert out[0].reason == "last 1 of 5"


def test_the_budget_only_weighs_what_the_rules_kept() -> None:
    bs = sized(4, 4, 50, 50)  # the two big ones go by the rules anyway
    out = select(bs, Policy(keep_last=2, max_total_size=8 * MB), UTC, "prod")
    assert [v.keep for v in out] == [True, True, False, False]
    assert out[2].reason.startswith("no rule of prod keeps it")


def test_a_budget_met_exactly_removes_nothing() -> None:
    out = select(sized(5, 5), Policy(keep_last=2, max_total_size=10 * MB), UTC, "prod")
    assert all(v.keep for v in out)


def test_the_budget_never_removes_the_newest() -> None:
    out = select(sized(9, 2, 2), Policy(keep_last=3, max_total_size=10 * MB), UTC, "prod")
    assert [v.keep for v in out] == [True, False, False]


def test_a_budget_smaller_than_the_newest_backup_is_an_error_naming_both() -> None:
    with pytest.raises(PolicyError, match=r"max_total_size 5.0 MiB of prod is smaller than its "
                                          r"newest backup b0 \(6.0 MiB\)"):
        select(sized(6, 1), Policy(keep_last=2, max_total_size=5 * MB), UTC, "prod")


def test_no_budget_changes_nothing() -> None:
    verdicts = apply_rules(sized(1, 2), Policy(keep_last=1), UTC, "prod")
    assert apply_budget(verdicts, None, "prod") == verdicts


# --- min_free_space --------------------------------------------------------------------------


def group(label: str, sizes_mb: list[float], floor: FreeFloor | None, keep_min: int = 3,
          *, start: float = 1_000_000.0, removed_mb: list[float] | None = None
          ) -> FloorGroup[str]:
    """A directory whose kept backups (newest first) have *sizes_mb*, plus backups the rules
    already remove (*removed_mb*), all one day apart."""
    vs: list[Verdict[str]] = []
    for i, s in enumerate([*sizes_mb, *(removed_mb or [])]):
        b = Backup(f"{label}{i}", start - i * 86400, int(s * MB), f"{label}{i}")
        vs.append(Verdict(b, i < len(sizes_mb), "rule" if i < len(sizes_mb) else "gone"))
    return FloorGroup(label, vs, floor, keep_min)


def test_the_floor_removes_oldest_first_and_stops_at_the_threshold() -> None:
    g = group("prod", [10] * 8, FreeFloor(percent=20))
    out = free_space_pass([g], free=5 * MB, total=100 * MB)
    # need 20 MiB: 5 + 10 + 10 = 25 after two removals
    assert [v.keep for v in g.verdicts] == [True] * 6 + [False] * 2
    assert g.removed == 2 and not g.at_keep_min
    assert out.free_after == 25 * MB and out.free_before == 5 * MB
    assert g.verdicts[7].reason == "free space 5.0 MiB (5.0%) below min_free_space 20%"
    assert g.verdicts[6].reason == "free space 15.0 MiB (15.0%) below min_free_space 20%"


def test_the_floor_stops_at_keep_min_and_says_so() -> None:
    g = group("prod", [10] * 5, FreeFloor(bytes=90 * MB), keep_min=3)
    out = free_space_pass([g], free=5 * MB, total=100 * MB)
    assert [v.keep for v in g.verdicts] == [True, True, True, False, False]
    assert g.at_keep_min and g.removed == 2
    assert out.free_after == 25 * MB


def test_the_floor_counts_what_the_rules_already_remove() -> None:
    g = group("prod", [10] * 5, FreeFloor(bytes=20 * MB), removed_mb=[10])
    out = free_space_pass([g], free=5 * MB, total=100 * MB)
    # 5 free + 10 the rules free = 15 < 20: one more goes
    assert g.removed == 1 and out.free_after == 25 * MB


def test_a_floor_already_met_removes_nothing() -> None:
    g = group("prod", [10] * 5, FreeFloor(percent=15))
    out = free_space_pass([g], free=50 * MB, total=100 * MB)
    assert g.removed == 0 and out.free_after == 50 * MB
    assert all(v.keep for v in g.verdicts)


def test_the_floor_takes_the_oldest_across_directories_of_one_filesystem() -> None:
    prod = group("prod", [10] * 5, FreeFloor(percent=25), start=2_000_000.0)
    qa = group("qa", [10] * 5, FreeFloor(percent=25), start=1_000_000.0)  # all older
    out = free_space_pass([prod, qa], free=5 * MB, total=100 * MB)
    assert (prod.removed, qa.removed) == (0, 2)  # qa's are the oldest
    assert out.free_after == 25 * MB
    assert not qa.at_keep_min and not prod.at_keep_min


def test_when_the_oldest_directory_hits_keep_min_the_next_one_gives() -> None:
    prod = group("prod", [10] * 5, FreeFloor(percent=40), start=2_000_000.0)
    qa = group("qa", [10] * 4, FreeFloor(percent=40), start=1_000_000.0)
    out = free_space_pass([prod, qa], free=5 * MB, total=100 * MB)
    assert (qa.removed, prod.removed) == (1, 2)  # qa down to keep_min 3, then prod's oldest
    assert out.free_after == 35 * MB
    assert qa.at_keep_min and prod.at_keep_min


def test_a_directory_without_floor_gives_nothing_up_but_its_removals_count() -> None:
    plain = group("dev", [10] * 6, None, removed_mb=[20])
    prod = group("prod", [10] * 6, FreeFloor(bytes=40 * MB))
    out = free_space_pass([plain, prod], free=5 * MB, total=100 * MB)
    assert plain.removed == 0 and all(v.keep for v in plain.verdicts[:6])
    assert prod.removed == 2  # 5 + 20 from dev's rules + 2 x 10
    assert out.free_after == 45 * MB


def test_hard_linked_backups_free_nothing_so_the_floor_goes_on() -> None:
    vs = [Verdict(Backup(f"b{i}", 1e6 - i, 10 * MB, f"b{i}", frees=0 if i == 4 else None),
                  True, "rule") for i in range(5)]
    g = FloorGroup("prod", vs, FreeFloor(bytes=14 * MB), keep_min=1)
    out = free_space_pass([g], free=5 * MB, total=100 * MB)
    assert g.removed == 2 and out.free_after == 15 * MB


def test_the_newest_survives_the_floor_even_with_keep_min_one() -> None:
    g = group("prod", [10] * 3, FreeFloor(percent=99), keep_min=1)
    free_space_pass([g], free=0, total=100 * MB)
    assert [v.keep for v in g.verdicts] == [True, False, False]
