"""Cross-check: Debian's restic (``restic forget --dry-run --json``, 0.14 in bookworm) keeps the
same backups for the same reasons as the retention table, row by row.

Each row's backups become snapshots of one host in a throwaway repository (see
``tests/restic_repo.py``); restic reads them in the row's time zone. What restic keeps, and the
rules it names for each kept snapshot, must equal the row's expected survivors and reasons —
which ``test_retention.py`` checks our selection against. Skips when restic is not installed.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import restic_repo
from retention_cases import CASES, Case, mtime

why_not = restic_repo.available()
pytestmark = pytest.mark.skipif(why_not is not None, reason=why_not or "")

RESTIC_CASES = [c for c in CASES if c.restic]
FLAGS = {"keep_last": "--keep-last", "keep_hourly": "--keep-hourly",
         "keep_daily": "--keep-daily", "keep_weekly": "--keep-weekly",
         "keep_monthly": "--keep-monthly", "keep_yearly": "--keep-yearly",
         "keep_within": "--keep-within"}
# Our reason words -> restic's match texts
RESTIC_WORDS = {"last": "last snapshot", "hourly": "hourly snapshot",
                "daily": "daily snapshot", "weekly": "weekly snapshot",
                "monthly": "monthly snapshot", "yearly": "yearly snapshot"}


def host(case: Case) -> str:
    return f"case{CASES.index(case):02d}"


def expected(case: Case) -> Counter[tuple[float, frozenset[str]]]:
    """The row's survivors as (time, restic's match texts); a Counter, because restic picks
    among identical times in its own order."""
    out: Counter[tuple[float, frozenset[str]]] = Counter()
    for name, reason in case.keep.items():
        matches = set()
        for part in reason.split(", "):
            word = part.split(" ")[0]
            if word == "within":
                matches.add(part.removesuffix(" of newest"))
            else:
                matches.add(RESTIC_WORDS[word])
        out[(mtime(name, case.zone), frozenset(matches))] += 1
    return out


def restic_kept(groups: list[dict[str, Any]]) -> Counter[tuple[float, frozenset[str]]]:
    (group,) = groups
    assert len(group["keep"]) == len(group["reasons"])
    return Counter((datetime.fromisoformat(r["snapshot"]["time"]).timestamp(),
                    frozenset(r["matches"])) for r in group["reasons"])


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """One repository holding every row's snapshots; restic's answer for each row."""
    repo = restic_repo.Repo.create(tmp_path_factory.mktemp("restic"))
    for case in RESTIC_CASES:
        zone = ZoneInfo(case.zone)
        for name in case.backups:
            repo.add_snapshot(datetime.fromtimestamp(mtime(name, case.zone), zone), host(case))

    def run(case: Case) -> list[dict[str, Any]]:
        flags = [arg for key, value in case.policy.items()
                 for arg in (FLAGS[key], str(value))]
        return repo.forget(host(case), flags, case.zone)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(run, RESTIC_CASES))
    return {host(c): a for c, a in zip(RESTIC_CASES, answers, strict=True)}


def test_restic_reads_back_every_snapshot_time(results: dict[str, list[dict[str, Any]]]
                                               ) -> None:
    for case in RESTIC_CASES:
        (group,) = results[host(case)]
        seen = sorted(datetime.fromisoformat(s["time"]).timestamp()
                      for s in group["keep"] + (group["remove"] or []))
        assert seen == sorted(mtime(n, case.zone) for n in case.backups), case.id


@pytest.mark.parametrize("case", RESTIC_CASES, ids=[c.id for c in RESTIC_CASES])
def test_restic_keeps_the_rows_survivors_for_the_same_rules(
        case: Case, results: dict[str, list[dict[str, Any]]]) -> None:
    assert restic_kept(results[host(case)]) == expected(case)


def test_every_row_of_the_table_is_cross_checked() -> None:
    assert list(CASES) == RESTIC_CASES
