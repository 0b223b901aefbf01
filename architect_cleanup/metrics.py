"""Prometheus metrics: the last run, what it removed and kept, backups, space, the forecast.

Built from the history database (:func:`snapshot`), so the node_exporter textfile written
after each run (:func:`write_textfile`) and a ``GET /metrics`` (:func:`exposition`) say the
same. Debian's ``python3-prometheus-client`` renders them (a ``Recommends:``): without it,
:func:`exposition` gives None and :func:`write_textfile` writes nothing, without an error.
The metrics live in a private ``CollectorRegistry`` (never the client's global one), so
nothing of the process (the API's gunicorn worker) leaks in.

Every series is a gauge named ``architect_cleanup_*`` in base units (seconds, bytes):

================================================  =========================================
``last_run_timestamp_seconds``                    end of the newest finished run
``last_success_timestamp_seconds``                end of the newest successful run
``last_run_duration_seconds``                     its duration
``last_run_success``                              1 success, 0 failed or interrupted
``last_run_dry_run``                              1 when it was a dry run
``target_success{target}``                        per target that ran: 1 ok, 0 failed
``last_run_removed_items{target,env}``            items removed (would be, in a dry run)
``last_run_removed_bytes{target,env}``            their bytes
``last_run_kept_items{target,env}``               items looked at and kept
``backups{env}`` / ``backups_bytes{env}``         the backups there are after the run
``backup_newest_ok{env}``                         1 the newest backup verified good, 0 not
``filesystem_avail_bytes{path}``                  free space for unprivileged users
``filesystem_size_bytes{path}``                   file system size
``filesystem_filling{path}``                      1 filling, 0 not (absent: no forecast yet)
``filesystem_full_in_seconds{path,estimate}``     until full: point, earliest, latest
``category_bytes{category}``                      ``backups:<env>``, ``logs``, ``temp``
``database_size_bytes{database}``                 a dashboard database file
``table_rows{database,table}``                    rows of a purged table
================================================  =========================================

``env`` is the environment or database a target's figures belong to, empty for a target
without parts (so ``sum by (target)`` never counts twice).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from architect_cleanup import reports
from architect_cleanup.forecast import Forecast
from architect_cleanup.history import BackupRecord, PartRecord, Sample, TargetRecord

log = logging.getLogger(__name__)

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE_NAME = "architect_cleanup.prom"
PREFIX = "architect_cleanup_"
#: the exposition's content type (Prometheus text format 0.0.4), for GET /metrics
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Snapshot:
    """Everything the metrics show; times are Unix seconds."""

    last_run_at: float | None = None
    last_success_at: float | None = None
    duration_s: float | None = None
    success: bool | None = None
    dry_run: bool | None = None
    targets: Sequence[TargetRecord] = ()
    parts: Sequence[PartRecord] = ()
    backups: Sequence[BackupRecord] = ()
    samples: Sequence[Sample] = ()
    forecasts: Sequence[Forecast] = field(default_factory=tuple)


def snapshot(conn: sqlite3.Connection, *, now: datetime) -> Snapshot:
    """The metrics' figures from the history database: the newest finished run's, the last
    success's time, and the forecasts at *now*."""
    last = reports.latest_run(conn)
    if last is None:
        return Snapshot(forecasts=reports.forecasts(conn, now=now))
    good = reports.latest_run(conn, result="success")
    return Snapshot(
        last_run_at=_unix(last.finished_at or last.started_at),
        last_success_at=_unix(good.finished_at or good.started_at) if good else None,
        duration_s=last.duration_s,
        success=last.result == "success",
        dry_run=last.dry_run,
        targets=reports.run_targets(conn, last.id),
        parts=reports.run_parts(conn, last.id),
        backups=reports.run_backups(conn, last.id),
        samples=reports.run_samples(conn, last.id),
        forecasts=reports.forecasts(conn, now=now),
    )


def _unix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def available() -> bool:
    """True when python3-prometheus-client can be imported."""
    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def exposition(snap: Snapshot) -> bytes | None:
    """The metrics in Prometheus' text format; None without python3-prometheus-client."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415
        from prometheus_client.registry import Collector  # noqa: PLC0415
    except ImportError:
        return None
    families = list(_Families(snap).collect())

    class _Fixed(Collector):
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    data: bytes = generate_latest(registry)
    return data


def write_textfile(snap: Snapshot, directory: str = TEXTFILE_DIR) -> str | None:
    """Write ``architect_cleanup.prom`` for node_exporter's textfile collector in
    *directory*, atomically (a hidden temporary file, fsync'd, renamed: the collector reads
    only ``*.prom``), readable by the node_exporter user (0644). The path written, or None
    without python3-prometheus-client or without *directory* (the collector is not
    installed). Raises OSError when the directory is there but the file cannot be written."""
    if not os.path.isdir(directory):
        log.debug("metrics: no %s, no textfile written", directory)
        return None
    data = exposition(snap)
    if data is None:
        log.debug("metrics: python3-prometheus-client is not installed, no textfile written")
        return None
    path = os.path.join(directory, TEXTFILE_NAME)
    tmp = os.path.join(directory, f".{TEXTFILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)  # whatever the service's UMask
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


class _Gauges:
    """Gauge families by name, in the order they first got a value; called as
    ``gauge(name, doc, value, **labels)`` (a value of None adds nothing)."""

    def __init__(self) -> None:
        self.families: dict[str, Any] = {}

    def __call__(self, name: str, doc: str, value: float | None, **labels: str) -> None:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        if value is None:
            return
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = GaugeMetricFamily(PREFIX + name, doc,
                                                          labels=list(labels))
        fam.add_metric(list(labels.values()), float(value))


class _Families:
    """The metric families of one snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        gauge = _Gauges()
        s = self.snap
        self._last_run(gauge, s)
        self._targets(gauge, s)
        self._backups(gauge, s.backups)
        self._samples(gauge, s.samples)
        self._forecasts(gauge, s.forecasts)
        yield from gauge.families.values()

    @staticmethod
    def _last_run(gauge: _Gauges, s: Snapshot) -> None:
        gauge("last_run_timestamp_seconds", "End of the newest finished cleanup run.",
              s.last_run_at)
        gauge("last_success_timestamp_seconds", "End of the newest successful cleanup run.",
              s.last_success_at)
        gauge("last_run_duration_seconds", "Duration of the newest cleanup run.", s.duration_s)
        gauge("last_run_success", "1 when the newest cleanup run succeeded, else 0.",
              _flag(s.success))
        gauge("last_run_dry_run", "1 when the newest cleanup run was a dry run.",
              _flag(s.dry_run))

    @classmethod
    def _targets(cls, gauge: _Gauges, s: Snapshot) -> None:
        """Each target's success and figures (per environment or database when it has
        parts)."""
        with_parts = {p.target for p in s.parts}
        for t in s.targets:
            if t.status in ("ok", "failed"):
                gauge("target_success", "1 when the target succeeded in the newest run.",
                      _flag(t.status == "ok"), target=t.target)
            if t.target not in with_parts and t.status in ("ok", "failed"):
                cls._figures(gauge, t.target, "", t.removed, t.bytes, t.kept)
        for p in s.parts:
            cls._figures(gauge, p.target, p.part, p.removed, p.bytes, p.kept)

    @staticmethod
    def _backups(gauge: _Gauges, backups: Sequence[BackupRecord]) -> None:
        for b in backups:
            gauge("backups", "Backups of the environment after the newest run.", b.count,
                  env=b.env)
            gauge("backups_bytes", "Bytes of the environment's backups after the newest run.",
                  b.bytes, env=b.env)
            gauge("backup_newest_ok", "1 when the newest backup verified good, 0 when not.",
                  _flag(b.newest_ok), env=b.env)

    @staticmethod
    def _forecasts(gauge: _Gauges, forecasts: Sequence[Forecast]) -> None:
        for f in forecasts:
            if f.state == "too_few_samples":
                continue
            gauge("filesystem_filling", "1 when the file system's free space is shrinking "
                  "significantly (the forecast), else 0.", _flag(f.filling), path=f.name)
            for estimate, value in (("point", f.seconds), ("earliest", f.low),
                                    ("latest", f.high)):
                gauge("filesystem_full_in_seconds", "Forecast time until the file system is "
                      "full, at the growth of the last 14 days.", value, path=f.name,
                      estimate=estimate)

    @staticmethod
    def _figures(gauge: _Gauges, target: str, env: str, removed: int, nbytes: int,
                 kept: int) -> None:
        gauge("last_run_removed_items", "Items removed (or that a dry run would remove) by "
              "the newest run.", removed, target=target, env=env)
        gauge("last_run_removed_bytes", "Bytes of the items removed by the newest run.",
              nbytes, target=target, env=env)
        gauge("last_run_kept_items", "Items the newest run looked at and kept.", kept,
              target=target, env=env)

    @staticmethod
    def _samples(gauge: _Gauges, samples: Sequence[Sample]) -> None:
        for x in samples:
            if x.kind == "fs_free":
                gauge("filesystem_avail_bytes", "Free bytes for unprivileged users.", x.value,
                      path=x.name)
            elif x.kind == "fs_total":
                gauge("filesystem_size_bytes", "Size of the file system in bytes.", x.value,
                      path=x.name)
            elif x.kind == "bytes":
                gauge("category_bytes", "Bytes of a category (backups:<env>, logs, temp).",
                      x.value, category=x.name)
            elif x.kind == "db_bytes":
                gauge("database_size_bytes", "Size of a dashboard database file.", x.value,
                      database=x.name)
            elif x.kind == "rows":
                database, _, table = x.name.rpartition(":")
                gauge("table_rows", "Rows of a table the cleanup purges.", x.value,
                      database=database, table=table)


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)
