"""When does a file system fill? A linear fit over its free-space samples, with a range.

Pure: samples in, a :class:`Forecast` out, no I/O. The method, step by step:

1. Take the samples ``(time, free bytes)`` of the last *window* seconds (14 days).
2. Find the **last large upward jump**: a cleanup (or an operator) freed much more at once
   than the series' own ups and downs. A change between two samples is a jump when it is an
   increase, it exceeds the trend's expected change by more than :data:`JUMP_SIGMAS` robust
   standard deviations of those changes (median absolute deviation), and it is at least
   *min_jump* bytes (:func:`fit` derives that from the file system's size: 1 %). The hourly
   timer's own routine frees are part of the series' rhythm and are not jumps; the net
   growth across them is what the forecast is about.
3. Fit a least-squares line to the samples after that jump (all of them without a jump).
   The range is where the line's 95 % confidence band reaches 0 (Fieller's interval, with
   Student's t for the degrees of freedom): it reflects the uncertainty of both the slope
   and the level, and it is asymmetric, as a time 1/slope away should be.
4. **Not filling** when the slope is >= 0 or not significantly negative (the range of the
   slope reaches 0); **too few samples** below *min_samples* after the jump or under
   *min_span* seconds; **full** when the fitted free space is already at 0. Otherwise
   the time until the fitted line reaches 0: its point value, and the earliest and latest
   within the slope's range.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

HOUR = 3600.0
DAY = 86400.0
#: the fit's window: "at the growth of the last 14 days"
WINDOW = 14 * DAY
MIN_SAMPLES = 6
MIN_SPAN = 4 * HOUR
JUMP_SIGMAS = 6.0
#: a jump must free at least this share of the file system's size (when it is known)
JUMP_SHARE = 0.01
#: beyond this, "more than 5 years"
HORIZON = 5 * 365 * DAY

State = Literal["filling", "not_filling", "too_few_samples", "full"]

#: two-sided 95 % quantiles of Student's t by degrees of freedom (the largest entry <= dof)
_T95 = ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447),
        (7, 2.365), (8, 2.306), (9, 2.262), (10, 2.228), (12, 2.179), (15, 2.131),
        (20, 2.086), (25, 2.060), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980))


def t95(dof: int) -> float:
    """The two-sided 95 % Student t quantile for *dof* degrees of freedom (rounded to the
    next smaller tabulated dof: never narrower than the exact range)."""
    if dof < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if dof >= 1000:
        return 1.960
    return next(q for k, q in reversed(_T95) if dof >= k)


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast of one file system (*name*: its mount point or configured path).

    Times are seconds from *now*; ``seconds`` is the point estimate, ``low`` the earliest and
    ``high`` the latest within the 95 % range (set only when ``state`` is "filling"; 0 when
    "full"). ``slope`` is bytes per second (negative: filling), ``free`` the fitted free bytes
    now; ``samples`` and ``span`` what the fit used; ``jump_at`` the time of the cleanup the
    fit starts after, if any."""

    name: str
    state: State
    seconds: float | None = None
    low: float | None = None
    high: float | None = None
    slope: float | None = None
    slope_stderr: float | None = None
    free: float | None = None
    samples: int = 0
    span: float = 0.0
    window: float = WINDOW
    needed: int = MIN_SAMPLES
    jump_at: float | None = None

    @property
    def filling(self) -> bool:
        return self.state in ("filling", "full")

    def line(self) -> str:
        """One line for people: "at the growth of the last 14 days, /srv fills in about 23
        days (range 17-35)"."""
        if self.state == "too_few_samples":
            since = " since the last large cleanup" if self.jump_at is not None else ""
            return (f"{self.name}: no forecast yet ({self.samples} of {self.needed} samples"
                    f"{since})")
        head = f"at the growth of the last {_span_words(self.span, self.window)}"
        if self.jump_at is not None:
            head += " (since the last large cleanup)"
        if self.state == "full":
            return f"{head}, {self.name} is full"
        if self.state == "not_filling" or self.seconds is None:
            return f"{head}, {self.name} is not filling"
        if self.seconds > HORIZON:
            return f"{head}, {self.name} fills in more than 5 years"
        return f"{head}, {self.name} fills in about {_range_words(self)}"

    def to_dict(self) -> dict[str, Any]:
        """The numbers for ``--json`` (``line`` included)."""
        out = asdict(self)
        out["line"] = self.line()
        return out


def fit(samples: Iterable[tuple[float, float]], *, now: float, name: str,
        total: float | None = None, window: float = WINDOW, min_samples: int = MIN_SAMPLES,
        min_span: float = MIN_SPAN, min_jump: float | None = None) -> Forecast:
    """The forecast for *name* from its ``(unix time, free bytes)`` *samples* (any order).

    *total* is the file system's size (for the jump threshold, *min_jump* = 1 % of it unless
    given); samples after *now* or before ``now - window`` are not used."""
    points = sorted((t, f) for t, f in samples if now - window <= t <= now)
    if min_jump is None:
        min_jump = JUMP_SHARE * total if total else 0.0
    jump = last_jump(points, min_jump=min_jump)
    jump_at = points[jump][0] if jump is not None else None
    used = points[jump:] if jump is not None else points
    base = Forecast(name, "too_few_samples", samples=len(used), window=window,
                    needed=min_samples, jump_at=jump_at,
                    span=used[-1][0] - used[0][0] if used else 0.0)
    if len(used) < max(3, min_samples) or base.span < min_span:
        return base
    line = _least_squares(used, now)
    if line is None:
        return base
    q = t95(len(used) - 2)
    out = Forecast(name, "not_filling", slope=line.slope, slope_stderr=line.stderr,
                   free=line.level, samples=len(used), span=base.span, window=window,
                   needed=min_samples, jump_at=jump_at)
    if line.level <= 0:
        return _replace(out, state="full", seconds=0.0, low=0.0, high=0.0)
    if line.slope >= 0 or line.slope + q * line.stderr >= 0:
        return out
    low, high = _crossing_range(line, q)
    return _replace(out, state="filling", seconds=line.level / -line.slope, low=low,
                    high=high)


def last_jump(points: Sequence[tuple[float, float]], *, min_jump: float = 0.0) -> int | None:
    """The index of the first sample after the last large upward jump in time-sorted
    *points* (see the module's step 2), or None."""
    if len(points) < 3:
        return None
    steps = [(t1 - t0, f1 - f0) for (t0, f0), (t1, f1) in itertools.pairwise(points)]
    rates = [d / dt for dt, d in steps if dt > 0]
    if not rates:
        return None
    rate = statistics.median(rates)
    residuals = [d - rate * dt for dt, d in steps]
    centre = statistics.median(residuals)
    scale = 1.4826 * statistics.median(abs(r - centre) for r in residuals)
    threshold = max(JUMP_SIGMAS * scale, min_jump)
    found = None
    for i, ((_, d), r) in enumerate(zip(steps, residuals, strict=True)):
        if d > 0 and r - centre > threshold:
            found = i + 1
    return found


class _Line(NamedTuple):
    """A least-squares line over times relative to now."""

    slope: float
    stderr: float  # of the slope
    level: float  # the line at now
    n: int
    tbar: float  # mean time (relative to now)
    sxx: float
    s2: float  # residual variance


def _least_squares(points: Sequence[tuple[float, float]], now: float) -> _Line | None:
    """The line through *points*; None when the times do not vary."""
    n = len(points)
    ts = [t - now for t, _ in points]  # small numbers: no loss of precision in the squares
    fs = [f for _, f in points]
    tbar, fbar = sum(ts) / n, sum(fs) / n
    sxx = sum((t - tbar) ** 2 for t in ts)
    if sxx <= 0:
        return None
    sxy = sum((t - tbar) * (f - fbar) for t, f in zip(ts, fs, strict=True))
    slope = sxy / sxx
    ssr = sum((f - fbar - slope * (t - tbar)) ** 2 for t, f in zip(ts, fs, strict=True))
    s2 = ssr / (n - 2)
    return _Line(slope, math.sqrt(s2 / sxx), fbar - slope * tbar, n, tbar, sxx, s2)


def _crossing_range(line: _Line, q: float) -> tuple[float, float]:
    """When the line's 95 % confidence band reaches 0 (Fieller's interval for the time the
    line crosses 0: the uncertainty of both the slope and the level). Solves
    ``(L + b t)^2 = q^2 s^2 (1/n + (t - tbar)^2 / Sxx)``; the slope is significant
    (``b^2 > q^2 se_b^2``), so both roots are finite and bracket ``-L/b``."""
    b, lv, tbar = line.slope, line.level, line.tbar
    g = q * q * line.s2 / line.sxx
    a = b * b - g
    half_b = lv * b + g * tbar
    c = lv * lv - q * q * line.s2 / line.n - g * tbar * tbar
    root = math.sqrt(max(0.0, half_b * half_b - a * c))
    t1, t2 = sorted(((-half_b - root) / a, (-half_b + root) / a))
    return max(0.0, t1), max(0.0, t2)


def _replace(f: Forecast, **changes: Any) -> Forecast:
    values = asdict(f)
    values.update(changes)
    return Forecast(**values)


def _span_words(span: float, window: float) -> str:
    shown = window if span >= 0.9 * window else span
    if shown >= 2 * DAY:
        return f"{round(shown / DAY)} days"
    return f"{max(1, round(shown / HOUR))} hours"


def _range_words(f: Forecast) -> str:
    assert f.seconds is not None and f.low is not None and f.high is not None
    unit, size = ("hours", HOUR) if f.seconds < 2 * DAY else ("days", DAY)
    point = max(1, round(f.seconds / size))
    low = round(f.low / size)
    high = "more than 5 years" if f.high > HORIZON else str(round(f.high / size))
    sep = " to " if f.high > HORIZON else "-"
    return f"{point} {unit} (range {low}{sep}{high})"

