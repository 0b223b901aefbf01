"""Journal entries: message ids, structured fields, and the summary as the run's last entry.

The handler is checked here through its sender hook (what python3-systemd's journal.send would
receive); the system tests read the same fields back from a real journald."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from pathlib import Path

import pytest
from sd_helpers import build_tree, journal_collector

from architect_cleanup import cli
from architect_cleanup.config import Config, LogsConfig
from architect_cleanup.journal import (
    MESSAGE_IDS,
    SYSLOG_IDENTIFIER,
    JournalHandler,
    fields,
    setup_logging,
    stream_is_journal,
)
from architect_cleanup.state import StateStore
from architect_cleanup.worker import CleanupWorker

ID = {kind: u.hex for kind, u in MESSAGE_IDS.items()}


def test_message_ids_are_distinct_and_in_journald_spelling() -> None:
    assert len(set(ID.values())) == len(ID)
    assert fields("run_summary")["MESSAGE_ID"] == "3726a68e1ecc49c3a86281297a030576"


def test_fields_upper_cases_names_turns_booleans_into_digits_and_drops_none() -> None:
    f = fields("target_done", cleanup_target="logs", cleanup_dry_run=True, cleanup_items=3,
               cleanup_error=None)
    assert f == {"MESSAGE_ID": ID["target_done"], "CLEANUP_TARGET": "logs",
                 "CLEANUP_DRY_RUN": 1, "CLEANUP_ITEMS": 3}


def test_the_handler_sends_only_journal_fields_with_priority_and_identifier() -> None:
    with journal_collector() as journal:
        logging.getLogger("architect_cleanup.test").warning(
            "hello %s", "world", extra=fields("lock_held", cleanup_lock_pid=42))
    [entry] = journal.entries
    assert entry["MESSAGE"] == "hello world"
    assert entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == SYSLOG_IDENTIFIER
    assert entry["MESSAGE_ID"] == ID["lock_held"]
    assert entry["CLEANUP_LOCK_PID"] == 42
    assert all(k.isupper() for k in entry), "LogRecord internals must not reach the journal"


def test_the_handler_maps_levels_to_syslog_priorities() -> None:
    assert [JournalHandler.priority(lv) for lv in (
        logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)] == \
        [7, 6, 4, 3, 2]


def test_an_exception_goes_into_exception_text() -> None:
    with journal_collector() as journal:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("architect_cleanup.test").exception("failed")
    assert "ValueError: boom" in journal.entries[0]["EXCEPTION_TEXT"]


def test_a_failing_sender_does_not_break_the_caller() -> None:
    def broken(_msg: str, **_kw: object) -> None:
        raise OSError("journald gone")
    handler = JournalHandler(broken)
    record = logging.LogRecord("architect_cleanup", logging.INFO, __file__, 1, "x", None, None)
    logging.raiseExceptions, old = False, logging.raiseExceptions
    try:
        handler.emit(record)
    finally:
        logging.raiseExceptions = old


def _run(tmp_path: Path, root: Path | None = None, dry_run: bool = True) -> tuple:
    srv, tmp = tmp_path / "srv", tmp_path / "tmp"
    build_tree(srv, tmp, time.time(), databases=False)
    cfg = Config(root=str(root or srv), logs=LogsConfig(tmp_dir=str(tmp)))
    worker = CleanupWorker(dry_run=dry_run, config=cfg,
                           lock_file=str(tmp_path / "run" / "lock"),
                           state=StateStore(str(tmp_path / "state")))
    with journal_collector() as journal:
        stats = worker.run_cleanup()
    return stats, journal


def test_a_run_logs_start_one_entry_per_target_and_the_summary_last(tmp_path: Path) -> None:
    stats, journal = _run(tmp_path)
    first, last = journal.entries[0], journal.entries[-1]
    assert first["MESSAGE_ID"] == ID["run_started"]
    assert first["CLEANUP_DRY_RUN"] == 1 and first["CLEANUP_SOURCE"] == "python"
    assert first["CLEANUP_ROOT"] == str(tmp_path / "srv")

    done = {e["CLEANUP_TARGET"]: e for e in journal.by_id(ID["target_done"])}
    assert set(done) == {"backups", "logs", "tasks", "errors", "prompts", "temp"}
    for name, entry in done.items():
        t = stats.targets[name]
        assert entry["CLEANUP_RESULT"] == "ok"
        assert entry["CLEANUP_ITEMS"] == t.removed
        assert entry["CLEANUP_BYTES"] == t.bytes
        assert entry["CLEANUP_KEPT"] == t.kept
        assert entry["CLEANUP_CHECKED"] == t.checked
        assert entry["CLEANUP_DRY_RUN"] == 1
        assert float(entry["CLEANUP_DURATION"]) >= 0
        assert entry["PRIORITY"] == "6"
    assert done["backups"]["CLEANUP_ITEMS"] > 80

    assert last["MESSAGE_ID"] == ID["run_summary"], "the summary is the run's last entry"
    assert last["MESSAGE"] == stats.summary_line()
    assert last["MESSAGE"].startswith("Dry run: would free ")
    assert last["CLEANUP_RESULT"] == "success"
    assert last["CLEANUP_DRY_RUN"] == 1
    assert last["CLEANUP_BYTES"] == stats.space_freed
    assert last["CLEANUP_ITEMS"] == sum(t.removed for t in stats.targets.values())
    for seed_name in ("backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
                      "prompts_deleted", "temp_files_deleted", "space_freed_mb"):
        assert last[seed_name.upper()] == getattr(stats, seed_name)
    assert last["PRIORITY"] == "6"


def test_a_real_run_journals_each_removed_item_at_debug_priority_and_a_dry_run_none(
        tmp_path: Path) -> None:
    """Issue 21: what a real run removed is recorded item by item (logs, temp files and
    backups alike), without flooding `journalctl -p info`; the hourly dry run adds no
    per-item entries. The entries say what the run did, in words fit for a dry run too."""
    stats, journal = _run(tmp_path / "dry")
    assert journal.by_id(ID["item_removed"]) == []
    assert all(e.get("CLEANUP_ACTION", "would").startswith("would")
               for e in journal.by_id(ID["target_done"]) + journal.by_id(ID["run_summary"]))
    stats, journal = _run(tmp_path / "real", dry_run=False)
    items = journal.by_id(ID["item_removed"])
    per_target = {t: sum(1 for e in items if e["CLEANUP_TARGET"] == t) for t in stats.targets}
    assert per_target["backups"] == stats.backups_deleted > 0
    assert per_target["logs"] == stats.logs_deleted > 0
    # a whole __pycache__/ is one item (its reason counts the files in it)
    assert 0 < per_target["temp"] <= stats.temp_files_deleted
    assert all(" files" in e["CLEANUP_REASON"] for e in items
               if e["CLEANUP_PATH"].endswith("/"))
    assert all(e["PRIORITY"] == "7" and e["CLEANUP_PATH"] and e["CLEANUP_REASON"]
               and e["MESSAGE"].startswith("removed ") for e in items)
    done = {e["CLEANUP_TARGET"]: e for e in journal.by_id(ID["target_done"])}
    assert done["backups"]["CLEANUP_ACTION"] == "removed"
    assert journal.entries[-1]["CLEANUP_ACTION"] == "freed"


def test_a_failed_target_is_an_error_entry_and_the_summary_says_failed(tmp_path: Path) -> None:
    stats, journal = _run(tmp_path, root=tmp_path / "missing-root")
    failed = journal.by_id(ID["target_failed"])
    assert {e["CLEANUP_TARGET"] for e in failed} == {"backups", "logs", "tasks", "errors",
                                                     "prompts", "temp"}
    assert all(e["PRIORITY"] == "3" and "does not exist" in e["CLEANUP_ERROR"] for e in failed)
    last = journal.entries[-1]
    assert last["MESSAGE_ID"] == ID["run_summary"]
    assert last["CLEANUP_RESULT"] == "failed" and last["PRIORITY"] == "3"
    assert last["CLEANUP_FAILED_TARGETS"] == "backups,logs,tasks,errors,prompts,temp"
    assert not stats.success


def test_per_file_decisions_of_the_tree_targets_stay_out_of_the_journal(
        tmp_path: Path) -> None:
    # logs and temp may meet millions of files: their items go to the journal only at debug
    # level or with -v. (The backups target, whose items are few, logs each removal.)
    srv = tmp_path / "srv"
    srv.mkdir()
    old = time.time() - 2 * 86400
    for i in range(300):
        p = srv / f"x{i}.tmp"
        p.touch()
        os.utime(p, (old, old))
    stats, journal = _run(tmp_path)
    assert stats.temp_files_deleted >= 300
    per_file = [e for e in journal.entries
                if e["LOGGER"] != "architect_cleanup.targets.backups"]
    assert len(per_file) < 15, [e["MESSAGE"] for e in per_file]


def test_setup_logging_uses_stderr_for_warnings_when_there_is_no_journal() -> None:
    err = io.StringIO()
    assert setup_logging(journal=False, stderr=err) == "stderr"
    log = logging.getLogger("architect_cleanup.test")
    log.info("quiet")
    log.warning("loud")
    assert err.getvalue() == "WARNING: loud\n"


def test_setup_logging_does_not_duplicate_into_a_journal_connected_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = open(tmp_path / "journal-stream", "w")  # noqa: SIM115
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    try:
        assert stream_is_journal(stream)
        assert setup_logging(journal=True, stderr=stream) == "journal"
        handlers = logging.getLogger("architect_cleanup").handlers
        assert [type(h) for h in handlers] == [JournalHandler]
        # on a terminal both: the journal records the run, stderr shows warnings
        assert setup_logging(journal=True, stderr=io.StringIO()) == "journal+stderr"
    finally:
        setup_logging(journal=False)
        stream.close()


def test_the_cli_prints_no_summary_block_into_the_journal_so_the_summary_stays_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, tmp = tmp_path / "srv", tmp_path / "tmp"
    build_tree(srv, tmp, time.time(), databases=False)
    conf = tmp_path / "config.toml"
    conf.write_text(f'root = "{srv}"\n[logs]\ntmp_dir = "{tmp}"\n')
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: "journal")
    monkeypatch.setenv("TRIGGER_UNIT", "architect-cleanup.timer")
    with open(tmp_path / "stdout", "w+") as out:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        with journal_collector() as journal:
            code = cli.main(["--config", str(conf), "run", "--scheduled"], out=out)
        out.seek(0)
        printed = out.read()
    assert code == 0
    assert printed == ""
    assert journal.entries[-1]["MESSAGE_ID"] == ID["run_summary"]
    assert journal.entries[-1]["CLEANUP_SOURCE"] == "timer"
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["last_run"]["source"] == "timer"


def test_journal_message_ids_parse_as_uuids() -> None:
    for hex_id in ID.values():
        assert uuid.UUID(hex_id).hex == hex_id
