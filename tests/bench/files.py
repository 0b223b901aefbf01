"""Parts 1-3: the logs/temp rules against find and systemd-tmpfiles on a generated tree.

Contestants (each a whole command, process start-up included, stdout to /dev/null):

* engine: ``architect-cleanup --config X run --only logs,temp`` (``--force`` to delete), as
  the timer runs it (no ``--json``: its counts are read from the run's record in state.json);
* find: the equivalent expression — the logs rule's names with ``-mtime +30``, the temp rule's
  names with ``-mmin +60``, and ``__pycache__``/``.pytest_cache`` directories once empty — with
  ``-print`` for the dry run and ``-delete`` for the real one;
* systemd-tmpfiles: ``--clean`` with one line ``e ROOT - - - mM:30d`` (by mtime only, since a
  restored file has a new ctime). tmpfiles has no name filter inside a directory, so its work
  equals the others' only because the tree is built that way: every file older than 30 days
  is one a rule takes, and every ``__pycache__`` is old (tree.py).

After every real run the tree is checked: exactly the old files and the ``__pycache__``
directories are gone, nothing else (``Tree.check_after_delete``); the check also restores them
for the next run. Runs alternate between contestants, the order rotating each round; the
figure is the median of the rounds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proc import Run, median, run, sync
from tree import Tree

REPO = Path(__file__).resolve().parents[2]
LOG_PATTERNS = ("*.log", "*.log.*")
TEMP_PATTERNS = ("*.tmp", "*.temp", "*.cache", "*.pyc")
TEMP_DIRS = ("__pycache__", ".pytest_cache")
#: old logs in the baseline tree (part 3): more than one batch of the history's items
BASELINE_LOGS = 1200


def _names(patterns: tuple[str, ...]) -> list[str]:
    out: list[str] = ["("]
    for i, p in enumerate(patterns):
        out += (["-o"] if i else []) + ["-name", p]
    return [*out, ")"]


def find_expression() -> list[str]:
    """The rules as a find expression (the action is appended by the caller)."""
    return ["(",
            "(", *_names(LOG_PATTERNS), "-mtime", "+30", ")",
            "-o", "(", *_names(TEMP_PATTERNS), "-mmin", "+60", ")",
            "-o", "(", "-type", "d", *_names(TEMP_DIRS), "-empty", ")",
            ")"]


@dataclass
class Contestant:
    name: str
    cmd: list[str]
    env: dict[str, str] | None = None
    runs: list[Run] = field(default_factory=list)

    def walls(self) -> list[float]:
        return [r.wall for r in self.runs]

    def summary(self) -> dict[str, object]:
        return {"cmd": " ".join(self.cmd), "wall_s": [round(w, 3) for w in self.walls()],
                "median_s": round(median(self.walls()), 3),
                "cpu_s": [round(r.cpu, 3) for r in self.runs],
                "rss_kb": [r.rss_kb for r in self.runs],
                "machine_cpu_stall_s": [round(r.cpu_stall, 2) for r in self.runs],
                "machine_io_stall_s": [round(r.io_stall, 2) for r in self.runs]}


class FileBench:
    """The engine's side of the set-up: its config, state and lock directories."""

    def __init__(self, work: Path, tree: Tree, log: Callable[[str], None],
                 workers: int | None = None) -> None:
        self.work = work
        self.tree = tree
        self.log = log
        self.conf_dir = work.resolve() / f"engine-{tree.total}"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.conf_dir / "config.toml"
        # logs.tmp_dir off: /tmp is not part of the generated tree
        pool = f"\n[safety]\nworkers = {workers}\n" if workers else ""
        self.conf.write_text(f'root = "{tree.root.resolve()}"\ndry_run = true\n\n'
                             f'[logs]\ntmp_dir = ""\n{pool}')
        # the same engine over a tree of one old log: its start-up and what every run pays
        # once whatever the tree (the scan of /proc for open files), which does not grow
        self.empty_root = self.conf_dir / "empty-root"
        one = self.empty_root / "data" / "old.log"
        one.parent.mkdir(parents=True, exist_ok=True)
        one.touch()
        os.utime(one, (0, 0))
        self.empty_conf = self.conf_dir / "config-empty.toml"
        self.empty_conf.write_text(f'root = "{self.empty_root}"\ndry_run = true\n\n'
                                   f'[logs]\ntmp_dir = ""\n{pool}')
        # ... and over a small tree that takes every path a run of a big one takes once:
        # more than one batch of items (the history's item writer process, its drain at the
        # end, the prune of an older run's items) and a __pycache__ taken whole. Its own
        # files are 0.1 % of the big tree's: a linear engine's ratio is 10.1, not 10.
        self.base_root = self.conf_dir / "baseline-root"
        logs = self.base_root / "data" / "logs"
        pyc = self.base_root / "data" / "app" / "__pycache__"
        for path in [*(logs / f"old-{i:04d}.log" for i in range(BASELINE_LOGS)),
                     *(pyc / f"m{i}.cpython-311.pyc" for i in range(3))]:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            os.utime(path, (0, 0))
        os.utime(pyc, (0, 0))
        self.base_conf = self.conf_dir / "config-baseline.toml"
        self.base_conf.write_text(f'root = "{self.base_root}"\ndry_run = true\n\n'
                                  f'[logs]\ntmp_dir = ""\n{pool}')
        # Every bench starts from a new install's state: no history yet. The engine's state
        # directory used to persist across bench sessions, and each real run of the restored
        # tree keeps its 300,660 items for 90 days (no server removes that many every hour):
        # with the 84 MB history so grown, a real run of the 100k tree took 3.32 s against
        # 2.98 s with a new one, so a figure depended on how often the bench had run on the
        # machine before (351 MB for the 1M tree at stop 19). Within a session the
        # history grows with every run, as it does on a server.
        shutil.rmtree(self.conf_dir / "state", ignore_errors=True)
        # the metrics textfile: a directory that does not exist (never the host's collector's)
        env = dict(os.environ, STATE_DIRECTORY=str(self.conf_dir / "state"),
                   RUNTIME_DIRECTORY=str(self.conf_dir / "run"),
                   ARCHITECT_CLEANUP_TEXTFILE_DIR=str(self.conf_dir / "no-textfile"))
        for var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID",
                    "ARCHITECT_CLEANUP_CONFIG"):
            env.pop(var, None)
        self.env = env
        exe = Path(sys.executable).parent / "architect-cleanup"
        # as the timer runs it: no --json (whose list of items, up to stats.ITEMS_LIMIT, is a
        # caller's extra); the counts are read back from the run's record in state.json
        self.engine_cmd = [str(exe), "--config", str(self.conf), "run", "--only",
                           "logs,temp"]
        # part 5: the same run without the history (the [history] table switched off)
        self.conf_off = self.conf_dir / "config-no-history.toml"
        self.conf_off.write_text(self.conf.read_text() + "\n[history]\nenabled = false\n")
        self.engine_off_cmd = [str(exe), "--config", str(self.conf_off), "run", "--only",
                               "logs,temp"]
        self.tmpfiles_conf = self.conf_dir / "bench-tmpfiles.conf"
        self.tmpfiles_conf.write_text(f"e {tree.root.resolve()} - - - mM:30d\n")

    def engine(self, *, force: bool) -> Contestant:
        return Contestant("architect-cleanup",
                          self.engine_cmd + (["--force", "--yes"] if force else []), self.env)

    def find(self, *, delete: bool) -> Contestant:
        action = "-delete" if delete else "-print"
        return Contestant("find" + (" -delete" if delete else ""),
                          ["find", str(self.tree.root), *find_expression(), action])

    def tmpfiles(self) -> Contestant:
        return Contestant("systemd-tmpfiles --clean",
                          ["systemd-tmpfiles", "--clean", str(self.tmpfiles_conf)])

    # --- checks ------------------------------------------------------------------------------

    def engine_counts(self, force: bool) -> tuple[int, Run]:
        """Run the engine once with its JSON captured: files it (would) remove."""
        cap = self.conf_dir / "engine-out.txt"
        r = run(self.engine(force=force).cmd, env=self.env, capture=cap)
        stats = self.last_stats()
        return stats["logs_deleted"] + stats["temp_files_deleted"], r

    def last_stats(self) -> dict[str, int]:
        """The counts of the engine's newest run, from its record in the state file."""
        doc = json.loads((self.conf_dir / "state" / "state.json").read_text())
        stats: dict[str, int] = doc["last_run"]["stats"]
        return stats

    def find_count(self) -> int:
        cap = self.conf_dir / "find-out.txt"
        r = run(self.find(delete=False).cmd, capture=cap)
        return r.out.count("\n")

    # --- part 1 ------------------------------------------------------------------------------

    def dry_runs(self, repeat: int) -> dict[str, object]:
        """Engine dry run vs find -print, warm cache, alternating."""
        t = self.tree
        t.refresh_fresh()
        want = t.counts.old
        eng_n, first = self.engine_counts(force=False)  # also warms the cache
        find_n = self.find_count()
        self.log(f"  dry run finds {eng_n:,} files, find prints {find_n:,} (old files: {want:,})")
        if not eng_n == find_n == want:
            raise RuntimeError(f"dry runs disagree: engine {eng_n}, find {find_n}, "
                               f"tree {want}")
        eng, fnd = self.engine(force=False), self.find(delete=False)
        for i in range(repeat):
            order = (eng, fnd) if i % 2 == 0 else (fnd, eng)
            for c in order:
                c.runs.append(run(c.cmd, env=c.env))
            self.log(f"  round {i + 1}/{repeat}: engine {eng.runs[-1].wall:.2f}s, "
                     f"find {fnd.runs[-1].wall:.2f}s")
        return {"files": t.counts.files, "candidates": want, "engine": eng.summary(),
                "find": fnd.summary(), "first_engine_rss_kb": first.rss_kb,
                "ratio": median(eng.walls()) / median(fnd.walls()),
                "cpu_ratio": median([r.cpu for r in eng.runs])
                / median([r.cpu for r in fnd.runs])}

    # --- part 2 ------------------------------------------------------------------------------

    def real_runs(self, repeat: int) -> dict[str, object]:
        """Engine --force vs find -delete vs systemd-tmpfiles --clean, each on a restored
        tree, rotating the order; every run checked for exactly the expected deletions."""
        t = self.tree
        contestants = [self.engine(force=True), self.find(delete=True), self.tmpfiles()]
        syncs: dict[str, list[float]] = {c.name: [] for c in contestants}
        checks: list[str] = []
        for i in range(repeat):
            k = i % len(contestants)
            for c in contestants[k:] + contestants[:k]:
                t.refresh_fresh()
                sync()
                r = run(c.cmd, env=c.env)
                c.runs.append(r)
                syncs[c.name].append(sync())
                ok, why = t.check_after_delete()  # also restores the tree
                if not ok:
                    raise RuntimeError(f"{c.name} did not delete exactly the old files: {why}")
                checks.append(f"{c.name}: {why}")
                self.log(f"  round {i + 1}/{repeat}: {c.name} {r.wall:.2f}s "
                         f"(+{syncs[c.name][-1]:.2f}s sync), checked: {why}")
        eng = contestants[0]
        out: dict[str, object] = {"files": t.counts.files, "deleted": t.counts.old,
                                  "caches": t.counts.caches, "checks": checks}
        for c in contestants:
            out[c.name] = {**c.summary(), "sync_after_s": [round(s, 3) for s in syncs[c.name]]}
        for c in contestants[1:]:
            out[f"ratio vs {c.name}"] = median(eng.walls()) / median(c.walls())
            out[f"cpu ratio vs {c.name}"] = (median([r.cpu for r in eng.runs])
                                             / median([r.cpu for r in c.runs]))
            out[f"ratio with sync vs {c.name}"] = (
                median([r.wall + s for r, s in zip(eng.runs, syncs[eng.name], strict=True)])
                / median([r.wall + s for r, s in zip(c.runs, syncs[c.name], strict=True)]))
        return out

    # --- part 3 ------------------------------------------------------------------------------

    def startup(self, rounds: int, *, baseline: bool = True) -> float:
        """Median wall time of the engine's dry run over the baseline tree (every path a big
        tree's run takes once: see __init__), or over a tree of one file: its fixed cost.
        Alternated with the other, so both see the same minutes of the machine.

        With a state directory of its own: the history of the big tree's runs (180 MB at
        1M files, whose quick_check a run waits for at its end when it is shorter) belongs
        to that tree, not to what every run pays."""
        conf, state = ((self.base_conf, "state-baseline-root") if baseline
                       else (self.empty_conf, "state-empty-root"))
        cmd = [self.engine_cmd[0], "--config", str(conf), *self.engine_cmd[3:]]
        env = dict(self.env, STATE_DIRECTORY=str(self.conf_dir / state))
        return median([run(cmd, env=env).wall for _ in range(rounds)])

    def growth(self, small: FileBench, repeat: int, real_repeat: int,
               dry: list[float] | None = None, real: list[float] | None = None
               ) -> dict[str, dict[str, float]]:
        """How the engine's time grows from *small*'s tree to this one: median wall times of
        dry and real runs at both sizes (this size's from parts 1 and 2 when given), each
        less the start-up, and their ratio."""
        startup = self.startup(max(3, repeat))
        one_file = self.startup(max(3, repeat), baseline=False)
        out: dict[str, dict[str, float]] = {}
        for kind, given, rounds in (("dry", dry, repeat), ("real", real, real_repeat)):
            walls = {}
            for name, fb, known in (("small", small, None), ("big", self, given)):
                if known:
                    walls[name] = median(known)
                    continue
                times = []
                for _ in range(rounds):
                    fb.tree.refresh_fresh()
                    sync()
                    times.append(run(fb.engine(force=kind == "real").cmd, env=fb.env).wall)
                    if kind == "real":
                        ok, why = fb.tree.check_after_delete()  # also restores the tree
                        if not ok:
                            raise RuntimeError(f"engine real run: {why}")
                walls[name] = median(times)
            self.log(f"  {kind}: {walls['small']:.2f}s -> {walls['big']:.2f}s, start-up "
                     f"{startup:.2f}s")
            out[kind] = {"small_s": walls["small"], "big_s": walls["big"],
                         "startup_s": startup,
                         "ratio": (walls["big"] - startup) / max(walls["small"] - startup,
                                                                 1e-3),
                         # with only the start-up of a one-file tree taken off (the
                         # measure until stop 22): per-run costs then count as growth
                         "one_file_startup_s": one_file,
                         "ratio_one_file": (walls["big"] - one_file)
                         / max(walls["small"] - one_file, 1e-3)}
        return out

    def rss(self, dry: int | None = None, real: int | None = None) -> dict[str, int]:
        """Peak RSS (KiB) of a dry run and a real run; those not given are measured here (a
        real run is checked and the tree restored after it)."""
        t = self.tree
        t.refresh_fresh()
        if dry is None:
            dry = self.engine_counts(force=False)[1].rss_kb
        if real is None:
            n, r = self.engine_counts(force=True)
            ok, why = t.check_after_delete()
            if not ok or n != t.counts.old:
                raise RuntimeError(f"engine real run at {t.total} files: removed {n}; {why}")
            real = r.rss_kb
        return {"dry_rss_kb": dry, "real_rss_kb": real}

    # --- part 5 ------------------------------------------------------------------------------

    def history_runs(self, repeat: int) -> dict[str, object]:
        """The real run with the history on (every removed item recorded) and off, each on a
        restored tree, alternating; each checked like part 2, and each history run's
        recorded items checked against what it removed."""
        t = self.tree
        on = Contestant("history on", [*self.engine_cmd, "--force"], self.env)
        off = Contestant("history off", [*self.engine_off_cmd, "--force"], self.env)
        recorded: list[dict[str, int]] = []
        cap = self.conf_dir / "engine-out.txt"
        for i in range(repeat):
            for c in (on, off) if i % 2 == 0 else (off, on):
                t.refresh_fresh()
                sync()
                r = run(c.cmd, env=c.env, capture=cap)
                c.runs.append(r)
                ok, why = t.check_after_delete()
                if not ok:
                    raise RuntimeError(f"{c.name} did not delete exactly the old files: {why}")
                if c is on:
                    recorded.append(self._recorded(self.last_stats()))
                self.log(f"  round {i + 1}/{repeat}: {c.name} {r.wall:.2f}s, "
                         f"{r.rss_kb / 1024:.1f} MB; checked: {why}")
        return {"files": t.counts.files, "deleted": t.counts.old, "caches": t.counts.caches,
                "on": on.summary(), "off": off.summary(), "recorded": recorded,
                "ratio": median(on.walls()) / median(off.walls()),
                "cpu_ratio": median([r.cpu for r in on.runs]) / median([r.cpu for r in off.runs]),
                "max_rss_kb": max(r.rss_kb for r in on.runs)}

    def _recorded(self, stats: dict[str, int]) -> dict[str, int]:
        """The newest run's recorded items by target, checked: one per removed log file, and
        for temp one per file plus one per whole directory (whose files it counts)."""
        import sqlite3

        db = self.conf_dir / "state" / "history.sqlite3"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            run_id, first, n = con.execute(
                "SELECT id, first_item, items_recorded FROM runs ORDER BY id DESC LIMIT 1"
            ).fetchone()
            per = dict(con.execute(
                "SELECT k.target, count(*) FROM items i JOIN kinds k ON k.id = i.kind "
                "WHERE i.id >= ? AND i.id < ? GROUP BY k.target", (first, first + n)))
            dirs = con.execute(
                "SELECT count(*) FROM items WHERE id >= ? AND id < ? AND name = ''",
                (first, first + n)).fetchone()[0]
        finally:
            con.close()
        logs, temp = per.get("logs", 0), per.get("temp", 0)
        if logs != stats["logs_deleted"] or dirs != self.tree.counts.caches or \
                n != logs + temp or temp > stats["temp_files_deleted"] or \
                n < stats["logs_deleted"] + stats["temp_files_deleted"] - 100 * dirs:
            raise RuntimeError(f"run {run_id} recorded {per} ({dirs} directories) for "
                               f"{stats['logs_deleted']} logs, {stats['temp_files_deleted']} "
                               "temp files removed")
        return {"run": run_id, "items": n, "logs": logs, "temp": temp, "directories": dirs}
