"""CleanupWorker: dry run by default, failure containment, the lock, state, the seed's API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from architect_cleanup import CleanupStats, CleanupWorker, LockHeld
from architect_cleanup.lock import RunLock, holder, lock_path
from architect_cleanup.state import StateStore

from conftest import NOW, make_config, snapshot
from demo import build_tree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, Path]:
    root, tmp = tmp_path / "srv" / "architect", tmp_path / "tmp"
    build_tree(root, tmp, now=NOW.timestamp(), databases=False)
    return root, tmp


def test_worker_defaults_to_a_dry_run(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    worker = CleanupWorker(config=make_config(root, tmp), now=NOW)
    assert worker.dry_run is True


def test_a_dry_run_changes_nothing_and_reports_what_a_real_run_does(demo: tuple[Path, Path]
                                                                    ) -> None:
    root, tmp = demo
    cfg = make_config(root, tmp)
    before = snapshot(root, tmp)
    dry = CleanupWorker(config=cfg, now=NOW).run_cleanup()
    assert snapshot(root, tmp) == before
    real = CleanupWorker(dry_run=False, config=cfg, now=NOW).run_cleanup()
    assert dry.counts() == real.counts()
    assert real.backups_deleted > 80 and real.logs_deleted > 0 and real.temp_files_deleted > 0
    again = CleanupWorker(dry_run=False, config=cfg, now=NOW).run_cleanup()
    assert again.space_freed == 0 and again.backups_deleted == 0


def test_non_boolean_dry_run_is_treated_as_a_dry_run(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    for value in (0, "false", None, [], "no"):
        w = CleanupWorker(dry_run=value, config=make_config(root, tmp), now=NOW)  # type: ignore[arg-type]
        assert w.dry_run is True


def test_stats_have_the_seed_fields(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    stats = CleanupWorker(config=make_config(root, tmp), now=NOW).run_cleanup()
    assert isinstance(stats, CleanupStats)
    doc = stats.to_dict()
    assert {"success", "dry_run", "stats", "message"} <= doc.keys()
    assert {"backups_deleted", "logs_deleted", "tasks_deleted", "errors_deleted",
            "prompts_deleted", "temp_files_deleted", "space_freed_mb"} <= doc["stats"].keys()
    assert stats.space_freed_mb == round(stats.space_freed / 1048576, 2)
    assert doc["message"] == "Cleanup completed (dry run)"
    assert stats.summary_line().startswith("Dry run: would free ")


def test_seed_constructor_arguments_override_the_config(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    stats = CleanupWorker(dry_run=True, backup_retention={"prod": 15, "qa": 10, "dev": 10},
                          log_age_days=60, task_age_days=14, config=make_config(root, tmp),
                          now=NOW).run_cleanup()
    detail = stats.targets["backups"].detail
    assert detail["prod"]["kept"] >= 15
    assert detail["qa"]["removed"] == 12 - 10


def test_a_missing_root_fails_the_file_targets_and_the_run_goes_on(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "nope", None)
    stats = CleanupWorker(config=cfg, now=NOW).run_cleanup()
    assert not stats.success
    assert set(stats.failed_targets) >= {"backups", "logs", "temp"}
    assert "does not exist" in stats.targets["backups"].message
    assert stats.summary_line().count("failed:") == 1


def test_a_target_that_raises_is_contained(demo: tuple[Path, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup.targets import logs

    def boom(self: object, *args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(logs.Logs, "on_files", boom)
    root, tmp = demo
    stats = CleanupWorker(dry_run=False, config=make_config(root, tmp), now=NOW).run_cleanup()
    assert stats.failed_targets == ["logs"]
    assert stats.targets["backups"].status == "ok" and stats.backups_deleted > 0
    assert stats.targets["temp"].status == "ok"
    assert "logs: disk on fire" in stats.errors


def test_only_runs_the_selected_targets(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    stats = CleanupWorker(config=make_config(root, tmp), now=NOW, only=["logs"]).run_cleanup()
    assert stats.targets["backups"].status == "skipped"
    assert stats.backups_deleted == 0 and stats.logs_deleted > 0
    with pytest.raises(ValueError, match="unknown target"):
        CleanupWorker(config=make_config(root, tmp), only=["bakups"])


def test_disabled_targets_do_not_run(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    cfg = make_config(root, tmp, backups={"enabled": False})
    stats = CleanupWorker(config=cfg, now=NOW).run_cleanup()
    assert stats.targets["backups"].status == "disabled" and stats.backups_deleted == 0


def test_a_second_run_while_one_holds_the_lock_fails_at_once(demo: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    root, tmp = demo
    path = lock_path()
    code = textwrap.dedent(f"""
        import sys, time
        from architect_cleanup.lock import RunLock
        with RunLock({path!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert holder(path) == proc.pid
        with pytest.raises(LockHeld) as info:
            CleanupWorker(config=make_config(root, tmp), now=NOW).run_cleanup()
        assert info.value.pid == proc.pid
        assert f"PID {proc.pid}" in str(info.value)
    finally:
        proc.kill()
        proc.wait()
    assert holder(path) is None  # the kernel dropped the lock with its holder
    CleanupWorker(config=make_config(root, tmp), now=NOW).run_cleanup()


def test_a_run_refused_before_the_holder_wrote_its_pid_still_names_it(tmp_path: Path) -> None:
    """The instant between the winner's flock and its PID write: the kernel names it."""
    path = str(tmp_path / "run" / "cleanup.lock")
    code = textwrap.dedent(f"""
        import fcntl, os, time
        os.makedirs(os.path.dirname({path!r}), exist_ok=True)
        fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # taken, no PID written yet
        print("held", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as info:
            RunLock(path).acquire()
        assert info.value.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_let_go_while_a_run_looked_at_it_is_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder finished between this run's failed flock and its look for the holder
    (found by `make stress`: the loser named nobody): the run takes the lock and goes on."""
    import fcntl

    from architect_cleanup import lock as lock_mod
    real = fcntl.flock
    busy = [1]

    def flock(fd: int, op: int) -> None:
        if busy[0]:
            busy[0] -= 1
            raise BlockingIOError(11, "Resource temporarily unavailable")
        real(fd, op)

    monkeypatch.setattr(lock_mod.fcntl, "flock", flock)
    path = str(tmp_path / "run" / "cleanup.lock")
    with RunLock(path):
        assert holder(path) == os.getpid()
    busy[0] = 10  # still busy and nobody to name after every try: refused, naming nobody
    with pytest.raises(LockHeld) as info:
        RunLock(path).acquire()
    assert info.value.pid is None


def test_the_lock_is_free_again_after_a_run() -> None:
    with RunLock(lock_path()):
        assert holder(lock_path()) == os.getpid()
    assert holder(lock_path()) is None


def test_runs_are_recorded_in_the_state_file(demo: tuple[Path, Path]) -> None:
    root, tmp = demo
    CleanupWorker(config=make_config(root, tmp), now=NOW, source="timer").run_cleanup()
    CleanupWorker(dry_run=False, config=make_config(root, tmp), now=NOW).run_cleanup()
    state = StateStore().load()
    assert len(state["history"]) == 2
    last = state["last_run"]
    assert last["dry_run"] is False and last["result"] == "success"
    assert last["stats"]["backups_deleted"] > 0
    assert state["history"][0]["source"] == "timer"


def test_a_corrupt_state_file_is_reported_and_replaced(demo: tuple[Path, Path],
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    root, tmp = demo
    store = StateStore()
    os.makedirs(store.directory, exist_ok=True)
    Path(store.path).write_bytes(b'{"last_run": {"trunc')
    stats = CleanupWorker(config=make_config(root, tmp), now=NOW).run_cleanup()
    assert stats.state_error is None
    assert "corrupt" in caplog.text
    assert json.loads(Path(store.path).read_text())["last_run"]["dry_run"] is True
    assert Path(store.path + ".corrupt").read_bytes() == b'{"last_run": {"trunc'


def test_history_is_bounded(demo: tuple[Path, Path]) -> None:
    from architect_cleanup import state as state_mod
    store = StateStore()
    for i in range(state_mod.HISTORY_LIMIT + 5):
        store.record({"started_at": str(i)})
    hist = store.load()["history"]
    assert len(hist) == state_mod.HISTORY_LIMIT and hist[-1]["started_at"] == str(
        state_mod.HISTORY_LIMIT + 4)


@needs_root
def test_a_full_disk_for_state_still_reports_and_fails(demo: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    root, tmp = demo
    full = tmp_path / "full"
    full.mkdir()
    # mode=0755: a tmpfs is 1777 by default, and a state directory others can write is refused
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(full)],
                   check=True)
    try:
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        monkeypatch.setenv("STATE_DIRECTORY", str(full))
        old = (full / "state.json")
        stats = CleanupWorker(config=make_config(root, tmp), now=NOW).run_cleanup()
        assert stats.state_error is not None and "No space left" in stats.state_error
        assert not old.exists()
        assert not [p for p in full.iterdir() if p.name.startswith(".state.")]
        assert stats.summary_line() in caplog.text  # the journal summary is still written
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_a_stop_between_two_targets_stops_the_run_where_it_landed(
        demo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM right after one target finished: the next target reports "stopped on
    request" (stopped, not failed), the others were not started, and the run is not a success."""
    from architect_cleanup.targets.base import REGISTRY
    stop = [False]
    backups = REGISTRY["backups"]

    class StopAfterBackups(backups):  # type: ignore[misc,valid-type]
        def run(self, ctx, result):  # type: ignore[no-untyped-def]
            super().run(ctx, result)
            stop[0] = True

    monkeypatch.setitem(REGISTRY, "backups", StopAfterBackups)
    root, tmp = demo
    stats = CleanupWorker(config=make_config(root, tmp), now=NOW,
                          should_stop=lambda: stop[0]).run_cleanup()
    assert stats.targets["backups"].status == "ok"
    assert not stats.success
    after = [t for n, t in stats.targets.items() if n != "backups"]
    assert [t.message for t in after].count("stopped on request") == 1
    assert after[0].status == "stopped" and after[0].message == "stopped on request"
    assert stats.failed_targets == [] and stats.result == "stopped"
    assert all(t.status == "skipped" for t in after[1:]
               if t.message != "stopped on request"), [t.status for t in after]


def test_a_state_write_leaves_only_state_json_and_sweeps_an_interrupted_ones_file(
        tmp_path: Path) -> None:
    """make stress found a run killed between creating its temporary file and the rename:
    the file is now written under no name (O_TMPFILE) and named only for the rename, and a
    leftover of an interrupted write is removed by the next one."""
    (tmp_path / ".state.abc123.tmp").write_text('{"half": ')
    store = StateStore(str(tmp_path))
    store.write({"format": 1, "last_run": None, "history": []})
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["history"] == []
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o644


def test_without_o_tmpfile_the_state_is_written_through_a_named_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from architect_cleanup import state as state_mod
    monkeypatch.setattr(state_mod, "_unnamed", lambda _dfd, _data: None)
    StateStore(str(tmp_path)).write({"format": 1, "last_run": None, "history": [{"a": 1}]})
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["history"] == [{"a": 1}]
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o644
