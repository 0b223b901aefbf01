"""Prometheus metrics from the history, checked by Debian's promtool and the client's parser."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from architect_cleanup import history as h
from architect_cleanup import metrics as m

from conftest import NOW

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
REPO = Path(__file__).resolve().parents[2]


def promtool_check(text: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text.decode(), text=True,
                          capture_output=True, timeout=60, check=False)


def series(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def hist(tmp_path: Path) -> h.History:
    opened = h.open_history(str(tmp_path / "state"), now=NOW)
    assert opened.history is not None
    hist = opened.history
    for i in range(24):
        at = NOW - timedelta(hours=24 - i)
        w = hist.begin_run(started_at=at, dry_run=False, source="timer")
        w.target(h.TargetRecord("logs", "ok", 4, 4096, 10))
        w.target(h.TargetRecord("backups", "ok", 1, 1 << 20, 10),
                 [h.PartRecord("backups", "prod", 1, 1 << 20, 7),
                  h.PartRecord("backups", "dev", 0, 0, 3)])
        w.target(h.TargetRecord("tasks", "failed" if i == 23 else "ok", message="locked"))
        w.target(h.TargetRecord("temp", "disabled"))
        w.backups([h.BackupRecord("prod", 7, 7 << 30, newest_ok=i != 23),
                   h.BackupRecord("dev", 3, 3 << 20)])
        w.samples([h.Sample("fs_free", "/srv", 100e9 - i * 1e9),
                   h.Sample("fs_total", "/srv", 1e12),
                   h.Sample("bytes", "backups:prod", 7 << 30), h.Sample("bytes", "logs", 5e6),
                   h.Sample("db_bytes", "/srv/data/prod/architect.db", 5e8),
                   h.Sample("rows", "/srv/data/prod/architect.db:tasks", 12000)])
        w.finish(finished_at=at + timedelta(seconds=12), duration_s=12.0,
                 result="failed" if i == 23 else "success", items=5, bytes=4096 + (1 << 20))
    return hist


def test_the_exposition_passes_promtool_check_metrics(hist: h.History) -> None:
    text = m.exposition(m.snapshot(hist.conn, now=NOW))
    assert text is not None
    res = promtool_check(text)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "" and res.stderr.strip() == ""  # no lint findings either


def test_the_metrics_describe_the_newest_run_and_the_last_success(hist: h.History) -> None:
    text = m.exposition(m.snapshot(hist.conn, now=NOW))
    assert text is not None
    s = series(text)
    last = (NOW - timedelta(hours=1) + timedelta(seconds=12)).timestamp()
    assert s[("architect_cleanup_last_run_timestamp_seconds", ())] == last
    assert s[("architect_cleanup_last_success_timestamp_seconds", ())] == last - 3600
    assert s[("architect_cleanup_last_run_success", ())] == 0
    assert s[("architect_cleanup_last_run_dry_run", ())] == 0
    assert s[("architect_cleanup_last_run_duration_seconds", ())] == 12
    assert s[("architect_cleanup_target_success", (("target", "tasks"),))] == 0
    assert s[("architect_cleanup_target_success", (("target", "logs"),))] == 1
    assert ("architect_cleanup_target_success", (("target", "temp"),)) not in s
    assert s[("architect_cleanup_backup_newest_ok", (("env", "prod"),))] == 0
    assert ("architect_cleanup_backup_newest_ok", (("env", "dev"),)) not in s  # unknown
    assert s[("architect_cleanup_backups", (("env", "prod"),))] == 7
    assert s[("architect_cleanup_backups_bytes", (("env", "dev"),))] == 3 << 20
    assert s[("architect_cleanup_table_rows", (("database", "/srv/data/prod/architect.db"),
                                               ("table", "tasks")))] == 12000
    assert s[("architect_cleanup_category_bytes", (("category", "logs"),))] == 5e6
    assert s[("architect_cleanup_filesystem_avail_bytes", (("path", "/srv"),))] == 77e9
    assert s[("architect_cleanup_filesystem_size_bytes", (("path", "/srv"),))] == 1e12
    assert s[("architect_cleanup_database_size_bytes",
              (("database", "/srv/data/prod/architect.db"),))] == 5e8


def test_removed_and_kept_figures_per_environment_never_count_twice(hist: h.History) -> None:
    text = m.exposition(m.snapshot(hist.conn, now=NOW))
    assert text is not None
    s = series(text)
    removed = {dict(k[1])["target"] + "/" + dict(k[1])["env"]: v for k, v in s.items()
               if k[0] == "architect_cleanup_last_run_removed_items"}
    # backups has parts: one series per environment, none for the total
    assert removed == {"logs/": 4, "backups/prod": 1, "backups/dev": 0, "tasks/": 0}
    assert s[("architect_cleanup_last_run_kept_items",
              (("env", "prod"), ("target", "backups")))] == 7
    assert s[("architect_cleanup_last_run_removed_bytes",
              (("env", ""), ("target", "logs")))] == 4096


def test_the_fill_forecast_is_exported_with_its_range(hist: h.History) -> None:
    text = m.exposition(m.snapshot(hist.conn, now=NOW))
    assert text is not None
    s = series(text)
    point = s[("architect_cleanup_filesystem_full_in_seconds",
               (("estimate", "point"), ("path", "/srv")))]
    assert point == pytest.approx(76 * 3600)  # 1 GB an hour; 77 GB an hour ago
    assert s[("architect_cleanup_filesystem_filling", (("path", "/srv"),))] == 1
    assert s[("architect_cleanup_filesystem_full_in_seconds",
              (("estimate", "earliest"), ("path", "/srv")))] <= point


def test_an_empty_history_gives_a_valid_empty_exposition(tmp_path: Path) -> None:
    hist = h.open_history(str(tmp_path), now=NOW).history
    assert hist is not None
    text = m.exposition(m.snapshot(hist.conn, now=NOW))
    assert text == b""
    assert promtool_check(text).returncode == 0


def test_the_textfile_is_written_atomically_and_readable_by_node_exporter(
        hist: h.History, tmp_path: Path) -> None:
    collector = tmp_path / "node-exporter"
    collector.mkdir()
    snap = m.snapshot(hist.conn, now=NOW)
    old_umask = os.umask(0o077)  # the service's UMask
    try:
        path = m.write_textfile(snap, str(collector))
    finally:
        os.umask(old_umask)
    assert path == str(collector / "architect_cleanup.prom")
    assert os.listdir(collector) == ["architect_cleanup.prom"]  # no temporary file left
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    data = Path(path).read_bytes()
    assert data == m.exposition(snap)
    res = subprocess.run([PROMTOOL, "check", "metrics"], stdin=open(path, "rb"),  # noqa: SIM115
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # a second write replaces the file whole
    inode = os.stat(path).st_ino
    m.write_textfile(m.Snapshot(), str(collector))
    assert Path(path).read_bytes() == b"" and os.stat(path).st_ino != inode


def test_without_the_collector_directory_no_file_and_no_error(tmp_path: Path) -> None:
    assert m.write_textfile(m.Snapshot(), str(tmp_path / "missing")) is None
    assert not (tmp_path / "missing").exists()


def test_without_the_prometheus_client_no_file_no_text_and_no_error(tmp_path: Path) -> None:
    # python -S: no site-packages, so Debian's prometheus_client is really not importable
    collector = tmp_path / "node-exporter"
    collector.mkdir()
    code = ("import sys; from architect_cleanup import metrics as m\n"
            "assert not m.available()\n"
            "assert m.exposition(m.Snapshot(last_run_at=1.0)) is None\n"
            f"assert m.write_textfile(m.Snapshot(last_run_at=1.0), {str(collector)!r}) is None\n"
            "print('ok')")
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO)}, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok" and res.stderr == ""
    assert os.listdir(collector) == []


def test_the_client_is_there_in_this_environment() -> None:
    assert m.available()


def test_the_package_recommends_the_client() -> None:
    control = (REPO / "packaging" / "debian" / "control").read_text()
    stanza = control.split("Package: architect-cleanup\n", 1)[1].split("\n\n", 1)[0]
    field = re.search(r"^Recommends:(.*(?:\n[ \t].*)*)", stanza, re.MULTILINE)
    assert field is not None
    assert "python3-prometheus-client" in re.split(r"[,\s]+", field.group(1))
