"""retention.py's small pieces, pinned down: policy descriptions and their TOML form, sizes,
spans, floors, the budget's boundary and the free-space pass across directories. Written
against the mutation run of issue 24 (tests/mutation)."""

from __future__ import annotations

from datetime import UTC

import pytest

from architect_cleanup.retention import (
    KIB,
    Backup,
    FloorGroup,
    FreeFloor,
    FreeSpace,
    Policy,
    PolicyError,
    Span,
    Verdict,
    apply_budget,
    apply_rules,
    format_size,
    free_space_pass,
    size_text,
)

DAY = 86400.0


def backups(n: int, size: int = 100, name: str = "b") -> list[Backup[str]]:
    """*n* backups a day apart, newest first."""
    return [Backup(f"{name}{i}", 1_000_000_000 - i * DAY, size, f"{name}{i}")
            for i in range(n)]


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (KIB**2, "1.0 MiB"), (KIB**2 - 1, "1024.0 KiB"), (5 * KIB**3, "5.0 GiB"),
    (KIB**3 - 1, "1024.0 MiB"), (2 * KIB**4, "2.0 TiB"), (-2048, "-2.0 KiB")])
def test_sizes_read_in_binary_units(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize("n, text", [
    (0, "0"), (1000, "1000"), (1536, "1536"), (2048, "2K"), (500 * KIB**2, "500M"),
    (5 * KIB**3, "5G"), (3 * KIB**4, "3T"), (KIB**4 + KIB**3, "1025G")])
def test_sizes_are_written_back_in_the_configurations_spelling(n: int, text: str) -> None:
    assert size_text(n) == text


def test_a_floor_asks_for_a_rounded_up_share_or_its_bytes() -> None:
    assert FreeFloor(percent=15).need(1000) == 150
    assert FreeFloor(percent=0.5).need(1001) == 6  # 5.005, rounded up
    assert FreeFloor(bytes=123).need(10**9) == 123
    assert (str(FreeFloor(percent=15)), FreeFloor(percent=15).to_config()) == ("15%", "15%")
    assert (str(FreeFloor(bytes=20 * KIB**3)), FreeFloor(bytes=20 * KIB**3).to_config()) == (
        "20.0 GiB", "20G")


def test_free_space_reads_as_a_share_of_the_filesystem() -> None:
    fs = FreeSpace(total=2000, free_before=500, free_after=1000)
    assert fs.percent(500) == 25.0
    assert fs.text(1000) == "1000 B (50.0%)"
    assert FreeSpace(total=0, free_before=0, free_after=0).percent(10) == 0.0


@pytest.mark.parametrize("span, truthy, text", [
    (Span(), False, "0s"), (Span(0, 1), True, "1s"), (Span(1, 0), True, "1d"),
    (Span(2, 3723), True, "2d1h2m3s"), (Span(0, 3600), True, "1h"), (Span(0, 60), True, "1m")])
def test_a_span_is_true_when_it_spans_anything_and_reads_as_configured(
        span: Span, truthy: bool, text: str) -> None:
    assert bool(span) is truthy
    assert str(span) == span.to_config() == text


def test_a_policy_describes_its_rules_budget_and_floor() -> None:
    assert Policy().describe_rules() == "no rules"
    assert Policy().describe() == "no rules"
    p = Policy(keep_last=10, keep_daily=7, keep_within=Span(2, 0))
    assert p.describe() == p.describe_rules() == "last 10, daily 7, within 2d"
    assert Policy(max_total_size=5 * KIB**3).describe() == "max_total_size 5.0 GiB"
    full = Policy(keep_weekly=4, keep_monthly=12, keep_yearly=2, keep_hourly=24,
                  max_total_size=500 * KIB**2, min_free_space=FreeFloor(percent=15),
                  keep_min=5)
    assert full.describe() == ("hourly 24, weekly 4, monthly 12, yearly 2, "
                               "max_total_size 500.0 MiB, min_free_space 15% (keep_min 5)")


def test_a_policy_writes_back_only_what_differs_from_the_defaults() -> None:
    assert Policy().to_config() == {}
    assert Policy.newest(3).to_config() == {"keep_last": 3}
    full = Policy(keep_last=2, keep_daily=7, keep_within=Span(1, 7200),
                  max_total_size=5 * KIB**3, min_free_space=FreeFloor(bytes=KIB**3),
                  keep_min=1)
    assert full.to_config() == {"keep_last": 2, "keep_daily": 7, "keep_within": "1d2h",
                                "max_total_size": "5G", "min_free_space": "1G",
                                "keep_min": 1}
    assert Policy(min_free_space=FreeFloor(percent=10)).to_config() == {
        "min_free_space": "10%"}


def test_a_policy_without_rules_keeps_every_backup_and_says_why() -> None:
    bs = backups(3)
    out = apply_rules(bs, Policy(), UTC, "prod")
    assert out == [Verdict(b, True, "policy has no rules: everything is kept") for b in bs]


def test_a_budget_exactly_the_newest_backups_size_is_met_by_keeping_only_it() -> None:
    bs = backups(3, size=100)
    verdicts = apply_rules(bs, Policy(keep_last=3), UTC, "prod")
    out = apply_budget(verdicts, 100, "prod")
    assert [v.keep for v in out] == [True, False, False]
    assert out[2].reason == "over max_total_size 100 B (kept set 300 B)"
    assert out[1].reason == "over max_total_size 100 B (kept set 200 B)"
    with pytest.raises(PolicyError, match=r"max_total_size 99 B of prod is smaller than its "
                                          r"newest backup b0 \(100 B\); raise it or drop it"):
        apply_budget(verdicts, 99, "prod")


def _group(label: str, bs: list[Backup[str]], floor: FreeFloor | None,
           keep_min: int = 1) -> FloorGroup[str]:
    return FloorGroup(label, [Verdict(b, True, "kept") for b in bs], floor, keep_min)


def test_a_directory_without_a_floor_does_not_stop_the_pass_for_the_next() -> None:
    first = _group("a", backups(3, name="a"), None)
    second = _group("b", backups(3, name="b"), FreeFloor(bytes=1100))
    out = free_space_pass([first, second], free=1000, total=10_000)
    assert [v.keep for v in first.verdicts] == [True, True, True]
    assert [v.keep for v in second.verdicts] == [True, True, False]
    assert second.verdicts[2].reason == "free space 1000 B (10.0%) below min_free_space 1.1 KiB"
    assert (second.removed, second.need, second.at_keep_min) == (1, 1100, False)
    assert (first.removed, first.need, first.at_keep_min) == (0, 0, False)
    assert (out.free_before, out.free_after, out.total) == (1000, 1100, 10_000)
    assert out.groups == [first, second]


def test_a_met_floor_does_not_stop_the_pass_for_the_next() -> None:
    first = _group("a", backups(3, name="a"), FreeFloor(bytes=500))
    second = _group("b", backups(3, name="b"), FreeFloor(bytes=1100))
    free_space_pass([first, second], free=1000, total=10_000)
    assert [v.keep for v in first.verdicts] == [True, True, True]
    assert [v.keep for v in second.verdicts] == [True, True, False]
    assert not second.at_keep_min


def test_between_identical_backups_of_two_directories_the_later_directory_gives_first(
        ) -> None:
    first = _group("a", backups(2), FreeFloor(bytes=1100))
    second = _group("b", backups(2), FreeFloor(bytes=1100))
    free_space_pass([first, second], free=1000, total=10_000)
    assert [v.keep for v in first.verdicts] == [True, True]
    assert [v.keep for v in second.verdicts] == [True, False]


def test_a_keep_min_of_zero_still_keeps_one_backup() -> None:
    g = _group("a", backups(3), FreeFloor(bytes=10**9), keep_min=0)
    free_space_pass([g], free=0, total=10**10)
    assert [v.keep for v in g.verdicts] == [True, False, False]
    assert g.at_keep_min


def test_a_backup_that_frees_nothing_adds_nothing_to_the_projection() -> None:
    bs = [Backup("b0", 3.0, 100, "b0"), Backup("b1", 2.0, 100, "b1", frees=0),
          Backup("b2", 1.0, 100, "b2", frees=0)]
    g = _group("a", bs, FreeFloor(bytes=1050))
    out = free_space_pass([g], free=1000, total=10_000)
    assert [v.keep for v in g.verdicts] == [True, False, False]
    assert out.free_after == 1000 and g.at_keep_min


def test_a_directory_at_its_keep_min_does_not_stop_the_pass_for_the_next() -> None:
    first = _group("a", backups(2, name="a"), FreeFloor(bytes=10**6), keep_min=2)
    second = _group("b", backups(3, name="b"), FreeFloor(bytes=1100))
    free_space_pass([first, second], free=1000, total=10**7)
    assert [v.keep for v in first.verdicts] == [True, True]
    assert [v.keep for v in second.verdicts] == [True, True, False]
    assert first.at_keep_min and second.removed == 1


def test_the_safety_net_keeps_the_newest_whatever_came_before() -> None:
    """No rule leaves the newest backup unkept today; the net under them (SPEC 4.4) must hold
    if one ever does."""
    from architect_cleanup.retention import _keep_newest_always

    bs = backups(3)
    out = _keep_newest_always([Verdict(b, False, "a rule said so") for b in bs], "prod")
    assert out == [Verdict(bs[0], True, "newest backup of prod"),
                   Verdict(bs[1], False, "a rule said so"),
                   Verdict(bs[2], False, "a rule said so")]
    kept = [Verdict(bs[0], True, "last 1 of 1")]
    assert _keep_newest_always(list(kept), "prod") == kept
    assert _keep_newest_always([], "prod") == []
