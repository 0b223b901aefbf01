"""Synthetic backup sets and what a retention policy keeps of them, with each survivor's reason.

One table drives two tests: ``test_retention.py`` checks the pure selection against it, and
``test_retention_restic.py`` checks Debian's restic (0.14, ``restic forget --dry-run --json``)
against the same rows, so each expected set below is the one restic itself computes.

A backup is named by its local wall-clock time, ``"2026-11-20 03:00"`` in the case's zone; an
explicit offset (``"2026-10-25 02:30+01:00"``) picks one side of a DST fold, and a trailing word
(``"2026-11-20 03:00 b"``) tells backups with identical mtimes apart (the greater name counts as
the newer, see ``retention.newest_first``). Every backup not listed in ``keep`` is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


@dataclass(frozen=True)
class Case:
    id: str
    backups: tuple[str, ...]
    policy: dict[str, object]
    keep: dict[str, str]
    zone: str = BERLIN
    #: restic can express this policy (no size rules, no minutes in keep_within)
    restic: bool = True
    notes: str = field(default="", compare=False)


def mtime(name: str, zone: str) -> float:
    """The instant a case's backup name stands for."""
    text = name.split(" ")
    stamp = f"{text[0]} {text[1]}"
    dt = datetime.fromisoformat(stamp)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(zone))
    return dt.timestamp()


def every(start: str, end: str, step: timedelta) -> Iterator[str]:
    """Names from *start* to *end* inclusive, *step* apart on the wall clock."""
    t, stop = datetime.fromisoformat(start), datetime.fromisoformat(end)
    while t <= stop:
        yield f"{t:%Y-%m-%d %H:%M}"
        t += step


DAY = timedelta(days=1)
FOUR_YEARS_OF_DAILIES = tuple(every("2023-01-01 03:00", "2026-11-25 03:00", DAY))
TWICE_A_MONTH = tuple(f"{y}-{m:02d}-{d:02d} 03:00" for y in (2024, 2025, 2026)
                      for m in range(1, 13) for d in (1, 15) if (y, m) <= (2026, 11))
SPRING_FORWARD_HOURLY = tuple(n for n in every("2026-03-28 09:00", "2026-03-29 12:00",
                                               timedelta(hours=1))
                              if not n.startswith("2026-03-29 02:"))  # 02:xx does not exist

CASES: tuple[Case, ...] = (
    Case("a single backup is kept by every rule",
         ("2026-11-20 03:00",),
         {"keep_last": 3, "keep_hourly": 1, "keep_daily": 7, "keep_weekly": 4,
          "keep_monthly": 12, "keep_yearly": 2, "keep_within": "1d"},
         {"2026-11-20 03:00": "within 1d of newest, last 1 of 3, hourly 2026-11-20 03:00, "
                              "daily 2026-11-20, weekly 2026-W47, monthly 2026-11, "
                              "yearly 2026"}),
    Case("keep_last keeps the newest n",
         tuple(every("2026-11-20 03:00", "2026-11-25 03:00", DAY)),
         {"keep_last": 3},
         {"2026-11-25 03:00": "last 1 of 3",
          "2026-11-24 03:00": "last 2 of 3",
          "2026-11-23 03:00": "last 3 of 3"}),
    Case("keep_daily keeps the newest of each of the n latest days that have a backup",
         ("2026-11-10 03:00", "2026-11-10 15:00", "2026-11-11 03:00", "2026-11-11 15:00",
          "2026-11-12 03:00", "2026-11-12 15:00",  # then five days without a backup
          "2026-11-18 03:00", "2026-11-19 03:00", "2026-11-19 09:00", "2026-11-19 15:00",
          "2026-11-19 21:00", "2026-11-20 03:00"),
         {"keep_daily": 4},
         {"2026-11-20 03:00": "daily 2026-11-20",
          "2026-11-19 21:00": "daily 2026-11-19",
          "2026-11-18 03:00": "daily 2026-11-18",
          "2026-11-12 15:00": "daily 2026-11-12"}),  # the gap is skipped, not counted
    Case("keep_hourly keeps the newest of each hour and skips empty hours",
         ("2026-11-20 09:00", "2026-11-20 09:20", "2026-11-20 09:40", "2026-11-20 10:00",
          "2026-11-20 10:20", "2026-11-20 12:10", "2026-11-20 12:50"),
         {"keep_hourly": 3},
         {"2026-11-20 12:50": "hourly 2026-11-20 12:00",
          "2026-11-20 10:20": "hourly 2026-11-20 10:00",
          "2026-11-20 09:40": "hourly 2026-11-20 09:00"}),
    Case("keep_weekly counts ISO weeks, across the turn of the year",
         tuple(every("2026-12-24 03:00", "2027-01-06 03:00", DAY)),
         {"keep_weekly": 3},
         {"2027-01-06 03:00": "weekly 2027-W01",
          "2027-01-03 03:00": "weekly 2026-W53",  # Mon 2026-12-28 .. Sun 2027-01-03
          "2026-12-27 03:00": "weekly 2026-W52"}),
    Case("a rule whose count is not used up keeps nothing more (no extra oldest)",
         TWICE_A_MONTH,
         {"keep_monthly": 6, "keep_yearly": 5},
         {"2026-11-15 03:00": "monthly 2026-11, yearly 2026",
          "2026-10-15 03:00": "monthly 2026-10",
          "2026-09-15 03:00": "monthly 2026-09",
          "2026-08-15 03:00": "monthly 2026-08",
          "2026-07-15 03:00": "monthly 2026-07",
          "2026-06-15 03:00": "monthly 2026-06",
          "2025-12-15 03:00": "yearly 2025",
          "2024-12-15 03:00": "yearly 2024"}),  # 2 yearly left over: 2024-01-01 still goes
    Case("years of daily backups under a grandfather-father-son policy",
         FOUR_YEARS_OF_DAILIES,
         {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "keep_yearly": 3},
         {"2026-11-25 03:00": "daily 2026-11-25, weekly 2026-W48, monthly 2026-11, "
                              "yearly 2026",
          "2026-11-24 03:00": "daily 2026-11-24",
          "2026-11-23 03:00": "daily 2026-11-23",
          "2026-11-22 03:00": "daily 2026-11-22, weekly 2026-W47",
          "2026-11-21 03:00": "daily 2026-11-21",
          "2026-11-20 03:00": "daily 2026-11-20",
          "2026-11-19 03:00": "daily 2026-11-19",
          "2026-11-15 03:00": "weekly 2026-W46",
          "2026-11-08 03:00": "weekly 2026-W45",
          "2026-10-31 03:00": "monthly 2026-10",
          "2026-09-30 03:00": "monthly 2026-09",
          "2026-08-31 03:00": "monthly 2026-08",
          "2026-07-31 03:00": "monthly 2026-07",
          "2026-06-30 03:00": "monthly 2026-06",
          "2025-12-31 03:00": "yearly 2025",
          "2024-12-31 03:00": "yearly 2024"}),
    Case("rules are applied independently and a backup kept by any is kept",
         ("2026-11-17 03:00", "2026-11-18 03:00", "2026-11-19 03:00", "2026-11-19 15:00",
          "2026-11-20 03:00", "2026-11-20 15:00"),
         {"keep_last": 2, "keep_daily": 3},
         {"2026-11-20 15:00": "last 1 of 2, daily 2026-11-20",
          "2026-11-20 03:00": "last 2 of 2",
          "2026-11-19 15:00": "daily 2026-11-19",
          "2026-11-18 03:00": "daily 2026-11-18"}),
    Case("keep_within counts back from the newest backup, not from now",
         tuple(every("2026-05-01 03:00", "2026-06-01 03:00", DAY)),  # then backups stopped
         {"keep_within": "3d"},
         {"2026-06-01 03:00": "within 3d of newest",
          "2026-05-31 03:00": "within 3d of newest",
          "2026-05-30 03:00": "within 3d of newest"}),  # 05-29 03:00 is exactly 3d: goes
    Case("keep_within counts calendar days: the day of a spring-forward has 23 hours",
         SPRING_FORWARD_HOURLY,
         {"keep_within": "1d"},
         {n: "within 1d of newest" for n in SPRING_FORWARD_HOURLY
          if n > "2026-03-28 12:00"},  # 03-28 12:00 CET is only 23 h before: it goes
         notes="exact 24 h would keep 2026-03-28 12:00 too"),
    Case("keep_within in hours is exact time, also across a spring-forward",
         SPRING_FORWARD_HOURLY,
         {"keep_within": "24h"},
         {n: "within 24h of newest" for n in SPRING_FORWARD_HOURLY
          if n >= "2026-03-28 12:00"}),  # 12:00 CET is 23 h before 12:00 CEST: kept
    Case("keep_hourly on a fall-back night: both 02:00 hours are one local hour",
         ("2026-10-25 01:00+02:00", "2026-10-25 01:30+02:00", "2026-10-25 02:00+02:00",
          "2026-10-25 02:30+02:00", "2026-10-25 02:00+01:00", "2026-10-25 02:30+01:00",
          "2026-10-25 03:00+01:00", "2026-10-25 03:30+01:00", "2026-10-25 04:00+01:00"),
         {"keep_hourly": 4},
         {"2026-10-25 04:00+01:00": "hourly 2026-10-25 04:00",
          "2026-10-25 03:30+01:00": "hourly 2026-10-25 03:00",
          "2026-10-25 02:30+01:00": "hourly 2026-10-25 02:00",
          "2026-10-25 01:30+02:00": "hourly 2026-10-25 01:00"}),
    Case("days are local: a 04:30 UTC cron leaves New York's spring-forward day empty",
         tuple(f"2026-03-{d:02d} 04:30+00:00" for d in range(5, 11)),
         {"keep_daily": 3},
         {"2026-03-10 04:30+00:00": "daily 2026-03-10",  # 00:30 EDT
          "2026-03-09 04:30+00:00": "daily 2026-03-09",  # 00:30 EDT
          "2026-03-08 04:30+00:00": "daily 2026-03-07"},  # 23:30 EST the day before
         zone=NEW_YORK),
    Case("keep_hourly on New York's fall-back night",
         ("2026-11-01 00:30-04:00", "2026-11-01 01:30-04:00", "2026-11-01 01:30-05:00"),
         {"keep_hourly": 2},
         {"2026-11-01 01:30-05:00": "hourly 2026-11-01 01:00",
          "2026-11-01 00:30-04:00": "hourly 2026-11-01 00:00"},
         zone=NEW_YORK),
    Case("identical mtimes: a bucket rule keeps one of them",
         ("2026-11-19 03:00", "2026-11-20 03:00 a", "2026-11-20 03:00 b",
          "2026-11-20 03:00 c"),
         {"keep_daily": 2},
         {"2026-11-20 03:00 c": "daily 2026-11-20",
          "2026-11-19 03:00": "daily 2026-11-19"}),
    Case("identical mtimes: keep_last counts each of them",
         ("2026-11-19 03:00", "2026-11-20 03:00 a", "2026-11-20 03:00 b",
          "2026-11-20 03:00 c"),
         {"keep_last": 2},
         {"2026-11-20 03:00 c": "last 1 of 2",
          "2026-11-20 03:00 b": "last 2 of 2"}),
    Case("identical mtimes: keep_within keeps all of them",
         ("2026-11-19 03:00", "2026-11-20 03:00 a", "2026-11-20 03:00 b",
          "2026-11-20 03:00 c"),
         {"keep_within": "1h"},
         {"2026-11-20 03:00 c": "within 1h of newest",
          "2026-11-20 03:00 b": "within 1h of newest",
          "2026-11-20 03:00 a": "within 1h of newest"}),
    Case("keep_within with hours is exact time",
         ("2026-11-18 14:59", "2026-11-18 15:01", "2026-11-20 03:00"),
         {"keep_within": "36h"},
         {"2026-11-20 03:00": "within 36h of newest",
          "2026-11-18 15:01": "within 36h of newest"}),
)
