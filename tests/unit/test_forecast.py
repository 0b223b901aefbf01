"""The fill forecast on synthetic series: known slopes, noise, a cleanup step, no growth."""

from __future__ import annotations

import random

import pytest

from architect_cleanup import forecast as fc

from conftest import DAY, HOUR, NOW_TS

GB = 1e9


def hourly(free_now: float, per_day: float, *, days: float = 14, noise: float = 0.0,
           seed: int = 0) -> list[tuple[float, float]]:
    """Hourly samples up to now of a file system whose free space shrinks *per_day*."""
    rng = random.Random(seed)
    n = int(days * 24)
    return [(NOW_TS - i * HOUR, free_now + per_day * i / 24 + rng.gauss(0, noise) * bool(noise))
            for i in range(n)]


def test_a_steady_decline_gives_the_exact_time_until_full() -> None:
    f = fc.fit(hourly(100 * GB, 4 * GB), now=NOW_TS, name="/srv")
    assert f.state == "filling"
    assert f.seconds == pytest.approx(25 * DAY, rel=1e-9)
    assert f.slope == pytest.approx(-4 * GB / DAY)
    assert f.low == pytest.approx(f.seconds) and f.high == pytest.approx(f.seconds)
    assert f.samples == 14 * 24
    assert f.line() == ("at the growth of the last 14 days, /srv fills in about 25 days "
                        "(range 25-25)")


@pytest.mark.parametrize("seed", range(5))
def test_with_noise_the_range_holds_the_true_time_and_the_point_is_close(seed: int) -> None:
    f = fc.fit(hourly(100 * GB, 4 * GB, noise=2 * GB, seed=seed), now=NOW_TS, name="/srv")
    assert f.state == "filling"
    assert f.low is not None and f.high is not None and f.seconds is not None
    assert f.low < 25 * DAY < f.high
    assert f.seconds == pytest.approx(25 * DAY, rel=0.1)
    assert f.slope_stderr is not None and f.slope_stderr > 0


def test_the_range_holds_the_true_time_about_95_times_in_100() -> None:
    covered = 0
    for seed in range(100):
        samples = hourly(100 * GB, 4 * GB, days=2, noise=3 * GB, seed=seed)
        f = fc.fit(samples, now=NOW_TS, name="/srv")
        assert f.state == "filling" and f.low is not None and f.high is not None
        covered += f.low <= 25 * DAY <= f.high
    assert 88 <= covered <= 100


def test_a_cleanup_step_starts_the_fit_after_it() -> None:
    # 2 GB/day growth; 3 days ago a cleanup freed 60 GB at once
    samples = [(t, v - 60 * GB * (t < NOW_TS - 3 * DAY))
               for t, v in hourly(100 * GB, 2 * GB, noise=0.2 * GB, seed=1)]
    f = fc.fit(samples, now=NOW_TS, name="/srv", total=500 * GB)
    assert f.state == "filling"
    assert f.jump_at is not None and NOW_TS - 3 * DAY <= f.jump_at <= NOW_TS - 3 * DAY + HOUR
    assert f.samples == 3 * 24 + 1  # the sample at the step is the cleanup's
    assert f.seconds == pytest.approx(50 * DAY, rel=0.1)
    assert f.line().startswith("at the growth of the last 3 days (since the last large "
                               "cleanup), /srv fills in about")
    # a fit across the step would see free space growing: the step must not be averaged in
    across = fc.fit(samples, now=NOW_TS, name="/srv", min_jump=1e18)
    assert across.jump_at is None and across.state == "not_filling"


def test_the_timers_routine_frees_are_not_jumps() -> None:
    # every 6 hours a run frees 0.5 GB (0.1 % of the disk): part of the rhythm, net -2 GB/day
    samples = []
    for i in range(14 * 24):
        t = NOW_TS - i * HOUR
        age_h = i
        samples.append((t, 100 * GB + (2 * GB / 24 + 0.5 * GB / 6) * age_h
                        - 0.5 * GB * (age_h // 6)))
    f = fc.fit(samples, now=NOW_TS, name="/srv", total=500 * GB)
    assert f.jump_at is None
    assert f.slope == pytest.approx(-2 * GB / DAY, rel=0.05)


def test_a_flat_series_with_noise_is_not_filling() -> None:
    f = fc.fit(hourly(100 * GB, 0.0, noise=1 * GB, seed=3), now=NOW_TS, name="/srv")
    assert f.state == "not_filling"
    assert f.seconds is None and f.low is None and f.high is None
    assert f.line() == "at the growth of the last 14 days, /srv is not filling"


def test_growing_free_space_is_not_filling() -> None:
    f = fc.fit(hourly(100 * GB, -1 * GB), now=NOW_TS, name="/srv")
    assert f.state == "not_filling"
    assert f.slope is not None and f.slope > 0


def test_a_decline_lost_in_the_noise_is_not_filling() -> None:
    # -0.1 GB/day over 8 hours with 5 GB of noise: the slope's range reaches 0
    f = fc.fit(hourly(100 * GB, 0.1 * GB, days=8 / 24, noise=5 * GB, seed=4), now=NOW_TS,
               name="/srv")
    assert f.state == "not_filling"
    assert f.slope_stderr is not None and f.slope_stderr > 0


def test_too_few_samples_give_no_forecast() -> None:
    f = fc.fit(hourly(100 * GB, 4 * GB, days=3 / 24), now=NOW_TS, name="/srv")
    assert f.state == "too_few_samples" and f.samples == 3 and f.seconds is None
    assert f.line() == "/srv: no forecast yet (3 of 6 samples)"
    assert fc.fit([], now=NOW_TS, name="/srv").state == "too_few_samples"


def test_samples_over_too_short_a_time_give_no_forecast() -> None:
    samples = [(NOW_TS - i * 60, 100 * GB + i * 1e6) for i in range(30)]  # 30 minutes
    assert fc.fit(samples, now=NOW_TS, name="/srv").state == "too_few_samples"


def test_samples_outside_the_window_are_not_used() -> None:
    old = [(NOW_TS - 30 * DAY - i * HOUR, 1 * GB) for i in range(100)]
    future = [(NOW_TS + i * HOUR, 1 * GB) for i in range(1, 10)]
    f = fc.fit(old + hourly(100 * GB, 4 * GB) + future, now=NOW_TS, name="/srv")
    assert f.samples == 14 * 24
    assert f.seconds == pytest.approx(25 * DAY)


def test_a_line_that_already_reached_zero_is_full() -> None:
    f = fc.fit(hourly(-1 * GB, 4 * GB, days=3), now=NOW_TS, name="/srv")
    assert f.state == "full" and f.seconds == 0.0
    assert f.line() == "at the growth of the last 3 days, /srv is full"


def test_the_line_renders_a_range_in_days_or_hours() -> None:
    f = fc.Forecast("/srv", "filling", seconds=23 * DAY, low=17 * DAY, high=35 * DAY,
                    span=14 * DAY)
    assert f.line() == ("at the growth of the last 14 days, /srv fills in about 23 days "
                        "(range 17-35)")
    f = fc.Forecast("/srv", "filling", seconds=30 * HOUR, low=20 * HOUR, high=50 * HOUR,
                    span=20 * HOUR)
    assert f.line() == ("at the growth of the last 20 hours, /srv fills in about 30 hours "
                        "(range 20-50)")
    f = fc.Forecast("/srv", "filling", seconds=400 * DAY, low=100 * DAY, high=9000 * DAY,
                    span=14 * DAY)
    assert f.line().endswith("fills in about 400 days (range 100 to more than 5 years)")
    f = fc.Forecast("/srv", "filling", seconds=4000 * DAY, low=3000 * DAY, high=9000 * DAY,
                    span=14 * DAY)
    assert f.line().endswith("/srv fills in more than 5 years")


def test_the_numbers_are_there_for_json() -> None:
    d = fc.fit(hourly(100 * GB, 4 * GB), now=NOW_TS, name="/srv").to_dict()
    assert d["state"] == "filling" and d["seconds"] == pytest.approx(25 * DAY)
    assert {"low", "high", "slope", "slope_stderr", "free", "samples", "line"} <= set(d)


def test_student_t_quantiles_shrink_towards_the_normal() -> None:
    assert fc.t95(1) == 12.706
    assert fc.t95(11) == fc.t95(10) == 2.228  # never narrower than the exact value
    assert fc.t95(5000) == 1.960
    with pytest.raises(ValueError):
        fc.t95(0)
