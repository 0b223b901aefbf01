"""A run's history: the steps that record it, from the start of the run to its metrics file.

:meth:`RunHistory.start` (at the start of the run, under the run lock) opens the history
database in the state directory and begins the run's record; its :attr:`RunHistory.on_item`
goes into the run context, so every item a target removes or archives (or would, in a dry run)
is streamed to the writer as it is decided (a batch in memory, never the run's whole list).
After the targets the worker's final steps call, in order:

1. :meth:`record`: each target's figures, the backups per environment, the space samples
   (:func:`samples`), the run's outcome;
2. :meth:`prune`: the ``[history]`` retention (``items_max_age``, ``runs_max_age``);
3. :meth:`metrics`: the fill forecasts (kept for ``state.json``, so a non-root ``status``
   shows them) and the node_exporter textfile (:mod:`~architect_cleanup.metrics`);
4. :meth:`close`.

None of them ever fails the cleanup or changes its exit code: a broken database is set aside
by :func:`~architect_cleanup.history.open_history`, a failing write disables the rest of the
run's history, and any other failure is one warning in the journal; the cleanup goes on.

The textfile goes to ``$ARCHITECT_CLEANUP_TEXTFILE_DIR`` when set (the tests), else
:data:`~architect_cleanup.metrics.TEXTFILE_DIR` (Debian's ``prometheus-node-exporter``);
without that directory, or without ``python3-prometheus-client``, there is no file and no
error.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

from architect_cleanup import metrics, reports
from architect_cleanup.config import Config
from architect_cleanup.forecast import Forecast
from architect_cleanup.history import (
    BackupRecord,
    DirItems,
    History,
    Item,
    RunWriter,
    Sample,
    filesystem_samples,
    open_history,
)
from architect_cleanup.stats import CleanupStats

log = logging.getLogger(__name__)

TEXTFILE_ENV = "ARCHITECT_CLEANUP_TEXTFILE_DIR"
#: the database targets, whose parts carry the rows of their table after the run
DB_TARGETS = ("tasks", "errors", "prompts")


def textfile_dir(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(TEXTFILE_ENV) or metrics.TEXTFILE_DIR


class RunHistory:
    """One run's history steps. Built by :meth:`start`; every method is safe to call in any
    state (a disabled history does nothing)."""

    def __init__(self, cfg: Config, directory: str, *, started_at: datetime,
                 textfile: str | None = None) -> None:
        self.cfg = cfg
        self.directory = directory
        self.started_at = started_at
        self.textfile_dir = textfile if textfile is not None else textfile_dir()
        self.history: History | None = None
        self.writer: RunWriter | None = None
        #: the fill forecasts after this run (for state.json and ``status``)
        self.forecasts: list[Forecast] = []
        #: the first problem (warned about once); the cleanup is not affected
        self.problem: str | None = None
        #: the metrics file written, if any
        self.textfile: str | None = None

    @classmethod
    def start(cls, cfg: Config, directory: str, *, now: datetime, dry_run: bool,
              source: str, textfile: str | None = None) -> RunHistory:
        """Open the history (set aside and recreated when corrupt) and begin the run's
        record; a disabled ``[history]`` or a database that cannot be used gives a history
        that records nothing."""
        run = cls(cfg, directory, started_at=now, textfile=textfile)
        if not cfg.history.enabled:
            return run
        with run._guard("open"):
            opened = open_history(directory, now=now)  # logs its own warning
            if opened.warning:
                run.problem = opened.warning
            run.history = opened.history
            if run.history is not None:
                run.writer = run.history.begin_run(started_at=now, dry_run=dry_run,
                                                   source=source, offload=True)
        return run

    @property
    def on_item(self) -> Callable[[Item], None] | None:
        """Where the targets hand their items (None when nothing is recorded)."""
        w = self.writer
        return w.item if w is not None and w.problem is None else None

    @property
    def on_dir_items(self) -> DirItems | None:
        """Where the file targets hand a directory's items at once (see
        :meth:`RunWriter.dir_items`; None when nothing is recorded)."""
        w = self.writer
        return w.dir_items if w is not None and w.problem is None else None

    def finished_at(self, stats: CleanupStats) -> datetime:
        return self.started_at + timedelta(seconds=stats.duration)

    # --- the final steps ------------------------------------------------------------------

    def record(self, stats: CleanupStats, *, interrupted: bool = False) -> None:
        """Each target's figures, the backups, the space samples and the run's outcome."""
        w = self.writer
        if w is None:
            return
        with self._guard("record"):
            w.record_stats(stats)
            w.backups(backup_records(stats))
            w.samples(samples(self.cfg, stats, self.directory))
            w.finish_stats(stats, finished_at=self.finished_at(stats),
                           interrupted=interrupted)
            if w.problem and not self.problem:
                self.problem = w.problem  # logged by the writer

    def prune(self, stats: CleanupStats) -> None:
        """Drop what ``[history]`` no longer keeps."""
        if self.history is None:
            return
        h = self.cfg.history
        with self._guard("prune"):
            done = self.history.prune(now=self.finished_at(stats),
                                      items_days=h.items_max_age / timedelta(days=1),
                                      runs_days=h.runs_max_age / timedelta(days=1))
            if done.problem and not self.problem:
                self.problem = done.problem  # logged by prune

    def metrics(self, stats: CleanupStats) -> None:
        """The fill forecasts, then the node_exporter textfile."""
        if self.history is None:
            return
        now = self.finished_at(stats)
        with self._guard("forecast"):
            self.forecasts = reports.forecasts(self.history.conn, now=now)
        with self._guard("metrics file"):
            snap = metrics.snapshot(self.history.conn, now=now)
            self.textfile = metrics.write_textfile(snap, self.textfile_dir)

    def close(self, _stats: CleanupStats | None = None) -> None:
        w = self.writer
        if w is not None:
            with self._guard("items"):
                w.close()  # the process writing items, when the run did not finish
        h, self.history = self.history, None
        if h is not None:
            with self._guard("close"):
                warning = h.close()  # logged: the check begun at the opening failed
                if warning and not self.problem:
                    self.problem = warning

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Contain a failure: one warning for the run (later ones only at debug level)."""
        try:
            yield
        except Exception as exc:  # the history must never fail the cleanup
            text = f"history: {what} failed: {exc.__class__.__name__}: {exc}"
            if self.problem is None:
                self.problem = text
                log.warning("%s; the cleanup is not affected", text)
            else:
                log.debug("%s", text, exc_info=True)


def backup_records(stats: CleanupStats) -> list[BackupRecord]:
    """The backups each environment has after the run (what a dry run would leave: those
    it would keep, plus the ones it would remove, which are still there)."""
    result = stats.targets.get("backups")
    if result is None or result.status not in ("ok", "failed"):
        return []
    out = []
    for env, part in result.detail.items():
        count = int(part.get("kept", 0))
        nbytes = int(part.get("kept_bytes", 0))
        if stats.dry_run:
            count += int(part.get("removed", 0))
            nbytes += int(part.get("bytes", 0))
        ok = part.get("newest_ok")  # the backups target's verdict on the newest (issue 15)
        out.append(BackupRecord(env, count, nbytes, ok if isinstance(ok, bool) else None))
    return out


def samples(cfg: Config, stats: CleanupStats, directory: str) -> list[Sample]:
    """The space figures of a run: free and total bytes of the file systems of the root and
    of the state directory (once when they are the same), the bytes of each environment's
    backups, of the logs and temp files the rules looked at (files young enough to keep, and
    in a dry run those it would remove; not what a whole directory holds), the size of each
    database file (with its -wal) and the rows of each purged table
    (``<database>:<table>``), the last two named by the database's label."""
    paths, devices = [], set()
    for path in (cfg.root, directory):
        try:
            dev = os.stat(path).st_dev
        except OSError:
            continue
        if dev not in devices:
            devices.add(dev)
            paths.append(path)
    out = filesystem_samples(paths)
    for b in backup_records(stats):
        out.append(Sample("bytes", f"backups:{b.env}", float(b.bytes)))
    for name in ("logs", "temp"):  # the files the rules looked at (a failed walk: none)
        result = stats.targets.get(name)
        if result is not None and result.status == "ok":
            left = result.kept_bytes + (result.bytes if stats.dry_run else 0)
            out.append(Sample("bytes", name, float(left)))
    seen: set[str] = set()
    for name in DB_TARGETS:
        result = stats.targets.get(name)
        if result is None:
            continue
        for label, part in result.detail.items():
            rel = part.get("path")
            if isinstance(rel, str) and label not in seen:
                seen.add(label)
                size = _db_size(cfg.resolve(rel))
                if size is not None:
                    out.append(Sample("db_bytes", label, float(size)))
            rows, table = part.get("rows"), part.get("table")
            if isinstance(rows, int) and isinstance(table, str):
                out.append(Sample("rows", f"{label}:{table}", float(rows)))
    return out


def _db_size(path: str) -> int | None:
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    with contextlib.suppress(OSError):
        size += os.stat(path + "-wal").st_size
    return size


def forecast_state(forecasts: list[Forecast]) -> list[dict[str, object]]:
    """The forecasts as state.json keeps them (``status`` prints their ``line``)."""
    return [f.to_dict() for f in forecasts]
