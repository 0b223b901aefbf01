"""`make mutate`: mutation testing of the safety-critical modules with mutmut.

Each of the six modules is copied with the package and the tests to a work directory of its
own (.cache/mutate/work/MODULE), where mutmut (3.x, from PyPI, in the venv) seeds one fault
at a time and runs, for each mutant, the unit tests that call the mutated function (mutmut
records which tests reach which function in a first, clean run; tests added later are
mapped incrementally). Then this script reads mutmut's results and prints, per module:

    killed / survived / accepted (equivalent or accepted: tests/mutation/accepted.toml)
    / timeout / unchecked (a run stopped early), and the score: detected / (checked -
    accepted)

Each survivor is keyed by module, function and the changed lines themselves (not line
numbers, not mutmut's running number), so the key survives edits elsewhere; a survivor that
is not in accepted.toml is printed as NEW, with a TOML entry to paste once it is judged.
The JSON report goes to .cache/mutate/report.json. Exit 1 when there is a new survivor or a
module is below its goal.

    tests/mutation/run.py                 fresh run of all six modules
    tests/mutation/run.py --keep          re-use the previous run's results (mutmut caches
                                          by function); --retest re-runs its survivors and
                                          what it did not reach; --survivors-only only its
                                          survivors
    tests/mutation/run.py --module fs     only some modules (repeatable)
    tests/mutation/run.py --report-only   just read the last results
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache" / "mutate"
WORK = CACHE / "work"  # one work directory per module: WORK / "fs", ...
REPORT = CACHE / "report.json"
ACCEPTED = HERE / "accepted.toml"

#: short name -> (source file, goal: the share of non-accepted mutants to be detected)
MODULES: dict[str, tuple[str, float]] = {
    "fs": ("architect_cleanup/fs.py", 0.95),
    "retention": ("architect_cleanup/retention.py", 0.95),
    "base": ("architect_cleanup/targets/base.py", 0.95),
    "backups": ("architect_cleanup/targets/backups.py", 0.95),
    "db": ("architect_cleanup/db.py", 0.90),
    "tasks": ("architect_cleanup/targets/tasks.py", 0.0),  # measured, no goal set
}

#: The unit tests the mutants run against (mutmut picks, per mutated function, those that
#: reach it). Tests of other modules that drive these six through a real run count too.
TEST_FILES = (
    "tests/unit/test_fs.py", "tests/unit/test_fs_faults.py", "tests/unit/test_fsops.py",
    "tests/unit/test_retention.py", "tests/unit/test_retention_faults.py",
    "tests/unit/test_backups.py", "tests/unit/test_backups_retention.py",
    "tests/unit/test_backups_free_space.py", "tests/unit/test_backups_faults.py",
    "tests/unit/test_logs.py", "tests/unit/test_temp.py", "tests/unit/test_prompts.py",
    "tests/unit/test_errors.py", "tests/unit/test_tasks.py", "tests/unit/test_db.py",
    "tests/unit/test_db_faults.py", "tests/unit/test_db_locks.py",
    "tests/unit/test_targets_faults.py",
    "tests/unit/test_fs_tree.py", "tests/unit/test_file_target_decisions.py",
    "tests/unit/test_config_policy.py", "tests/unit/test_dbfile.py",
    "tests/unit/test_backup_compress.py", "tests/unit/test_backup_verify.py",
    "tests/unit/test_backups_known_good.py", "tests/unit/test_backups_offload.py",
    # the same runs with the pool at 1 (the sequential path: TreeTarget.on_files) and at 4
    "tests/unit/test_parallel_walk.py",
)
#: Left out of the mutation runs (each reason in a comment): they would multiply the hour.
DESELECT = (
    # 28 s alone, and ~15x that as a mutant's timeout; the walker's depth handling is also
    # covered by test_walk_goes_deeper_than_the_recursion_limit_and_the_fd_window
    "tests/unit/test_fs.py::test_a_chain_of_thousands_of_nested_directories_costs_linear_time",
    # 2-7 s each, and every surviving mutant of a backups method runs them all (23 s of the
    # 58 s the whole selection takes): a real process killed while it compresses or uploads,
    # or a server that is down. What they prove is the crash safety of backup_compress.py
    # and offload.py (not mutated here); the decisions of backups.py they reach are pinned
    # by faster tests of the same files (a failed or damaged upload verification, wrong
    # credentials, a file size limit is one more failed compression)
    "tests/unit/test_backup_compress.py::"
    "test_a_sigkill_during_compression_leaves_the_original_and_a_rerun_completes",
    "tests/unit/test_backup_compress.py::"
    "test_a_file_size_limit_during_compression_leaves_the_original",
    "tests/unit/test_backups_offload.py::"
    "test_a_sigkill_during_an_upload_loses_nothing_and_the_rerun_completes",
    "tests/unit/test_backups_offload.py::"
    "test_a_server_that_is_down_keeps_every_backup_and_a_rerun_completes",
    # runs a copy of the package under /usr/bin/python3 as another user, which cannot
    # import a mutated module (it imports mutmut); it tests dblocks.inspect, not db.py
    "tests/unit/test_db_locks.py::test_processes_that_cannot_be_inspected_are_unknown_not_healthy",
)

#: mutmut's exit codes (mutmut.stats.status_by_exit_code), in this report's words
DETECTED = {"killed", "timeout", "segfault", "suspicious", "caught by type check"}


def status_of(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code
    return str(status_by_exit_code[code])


# --- staging and running ---------------------------------------------------------------------


def work_of(module: str) -> Path:
    return WORK / module


def meta_of(module: str) -> Path:
    return work_of(module) / "mutants" / (MODULES[module][0] + ".meta")


def stage(module: str, keep: bool) -> None:
    """A module's work directory: the package, the tests, and pyproject.toml with mutmut's
    section. Each module has its own, so that one module's run (or a change of its tests)
    never resets another's results."""
    work = work_of(module)
    if not keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("architect_cleanup", "tests"):
        dst = work / sub
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(REPO / sub, dst,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "mutation",
                                                      "system", "bench"))
    tests = [t for t in TEST_FILES if (REPO / t).exists()]
    conf: dict[str, Any] = {
        "source_paths": ["architect_cleanup"],
        "only_mutate": [MODULES[module][0]],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-W", "ignore"]
        + [f"--deselect={t}" for t in DESELECT],
        # a mutant's tests may take this times as long as on the clean code (plus 5 s; the
        # machine may be shared) before it counts as a timeout: mutants of the pauses and
        # the batch loop sleep or loop for ever, and each would hold a core that long
        "timeout_multiplier": 4.0,
        "timeout_constant": 5.0,
        "use_git_change_detection": False,
        # debug logging is diagnostics, not behaviour: its lines are not mutated
        "do_not_mutate_patterns": [r"^\s*log\.debug\("],
    }
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    text += "\n[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in conf.items())
    (work / "pyproject.toml").write_text(text, encoding="utf-8")


def remap_tests(module: str) -> None:
    """Have mutmut map every test to the functions it reaches again (its clean run, about a
    minute), keeping every result. mutmut maps only the tests it has not seen before, so a
    function added since the last full mapping would be tried against the new tests alone
    (and its mutants could survive tests that kill them)."""
    stats = work_of(module) / "mutants" / "mutmut-stats.json"
    if not stats.exists():
        return
    data = json.loads(stats.read_text())
    data["duration_by_test"] = {}  # every test is "new" to mutmut: all are mapped again
    data["tests_by_mangled_function_name"] = {}
    stats.write_text(json.dumps(data))


def reset_survivors(modules: list[str]) -> int:
    """Mark the previous run's survivors in *modules* unchecked, so mutmut runs them again."""
    n = 0
    for meta in (meta_of(m) for m in modules):
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        for k, v in data["exit_code_by_key"].items():
            if status_of(v) not in DETECTED:
                data["exit_code_by_key"][k] = None
                n += 1
        meta.write_text(json.dumps(data, indent=4))
    return n


def survivors(modules: list[str]) -> list[str]:
    """The mutants in *modules* the last run left alive (survived, or reached by no test)."""
    out = []
    for meta in (meta_of(m) for m in modules):
        if not meta.exists():
            continue
        for k, v in json.loads(meta.read_text())["exit_code_by_key"].items():
            if v is not None and status_of(v) not in DETECTED:
                out.append(k)
    return sorted(out)


def log_of(module: str) -> Path:
    return CACHE / f"mutmut-{module}.log"


def run_mutmut(module: str, max_children: int, names: list[str] | None = None) -> int:
    """mutmut run in the work directory (only *names*, when given); its (spinner) output goes
    to a log, progress here."""
    mutmut = Path(sys.executable).parent / "mutmut"
    # pytest's temporary directories in a place of the run's own, removed after it: a forked
    # mutant ends without pytest's clean-up, so each would leave its basetemp (21 GB in one
    # afternoon's runs under /tmp/pytest-of-root). A short path: tests bind Unix sockets in
    # their tmp_path (108 bytes at most).
    tmp = Path(f"/tmp/mutate-{module}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(tmp))
    cmd = [str(mutmut), "run", "--max-children", str(max_children), *(names or [])]
    print("==", " ".join(cmd[:4]), f"and {len(names)} mutants" if names else "",
          f"(in {work_of(module).relative_to(REPO)}; output in "
          f"{log_of(module).relative_to(REPO)})", flush=True)
    if os.geteuid() == 0 and shutil.which("unshare"):
        # the mounts a test makes (tmpfs for a full disk) go with the run, even those of a
        # mutant killed on its timeout before its teardown ran
        cmd = ["unshare", "--mount", "--propagation", "private", *cmd]
    adopt_orphans()
    with open(log_of(module), "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work_of(module), env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        last = ""
        while True:
            try:
                rc = proc.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                now = _progress(log_of(module))
                if now and now != last:
                    print(f"   {now}", flush=True)
                    last = now
                stop_orphans(keep=proc.pid)
    stop_orphans()
    shutil.rmtree(tmp, ignore_errors=True)
    if rc != 0:
        print(log_of(module).read_text(errors="replace")[-3000:], file=sys.stderr)
    return rc


def adopt_orphans() -> None:
    """Become the subreaper of what mutmut starts: a server a test started in a session of its
    own (SeaweedFS) is re-parented here, not to PID 1, when the mutant that started it is
    killed on its timeout before its teardown ran."""
    import ctypes
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def stop_orphans(keep: int | None = None) -> None:
    """Stop (by PID, with its process group) every child of this process but *keep*: while
    mutmut runs, a child other than mutmut is an orphan whose test is gone."""
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == keep:
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid != me:
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _progress(log: Path) -> str:
    """The last "done/total" mutmut's spinner wrote, as "done of total mutants"."""
    with open(log, "rb") as fh:
        fh.seek(max(0, log.stat().st_size - 400))
        tail = fh.read().decode("utf-8", "replace")
    found = re.findall(r"(\d+)/(\d+)", tail)
    if not found:
        return ""
    done, total = found[-1]
    return f"{done} of {total} mutants tested"


# --- reading the results ---------------------------------------------------------------------


@dataclass
class Mutant:
    name: str
    module: str
    function: str
    status: str
    change: list[str]
    key: str = ""


@dataclass
class ModuleReport:
    module: str
    goal: float
    counts: Counter[str] = field(default_factory=Counter)
    survivors: list[Mutant] = field(default_factory=list)

    @property
    def detected(self) -> int:
        return sum(self.counts[s] for s in DETECTED)

    @property
    def judged(self) -> int:
        return sum(self.counts.values()) - self.counts["accepted"] - self.counts["unchecked"]

    @property
    def score(self) -> float:
        return self.detected / self.judged if self.judged else 1.0


def function_of(mutant_name: str) -> str:
    """``architect_cleanup.fs.xǁRootǁopen_dir__mutmut_3`` -> ``Root.open_dir``."""
    local = mutant_name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    if local.startswith("xǁ"):
        return local[2:].replace("ǁ", ".")
    return local[2:] if local.startswith("x_") else local


def change_of(mutant_name: str, path: str) -> list[str]:
    """The changed lines of a mutant (``-`` original, ``+`` mutant), stripped of indentation."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    diff = get_diff_for_mutant(mutant_name, path=path)
    out = []
    for line in diff.splitlines()[2:]:
        if line[:1] in "-+":
            body = line[1:].strip()
            if body.startswith(("def x", "async def x")):
                continue  # the function's own (mangled) name
            out.append(line[0] + " " + body)
    return out


def key_of(m: Mutant) -> str:
    digest = hashlib.sha1("\n".join(m.change).encode()).hexdigest()[:10]
    return f"{m.module}:{m.function}:{digest}"


def load_accepted() -> dict[str, dict[str, str]]:
    with open(ACCEPTED, "rb") as fh:
        data = tomllib.load(fh)
    out: dict[str, dict[str, str]] = {}
    for entry in data.get("accepted", []):
        if not entry.get("reason", "").strip():
            raise SystemExit(f"{ACCEPTED}: {entry.get('key')}: a reason is required")
        out[entry["key"]] = entry
    return out


def collect(modules: list[str]) -> tuple[list[ModuleReport], list[Mutant], list[str]]:
    accepted = load_accepted()
    reports: list[ModuleReport] = []
    new: list[Mutant] = []
    seen: set[str] = set()
    for short in modules:
        path, goal = MODULES[short]
        rep = ModuleReport(short, goal)
        meta = meta_of(short)
        os.chdir(work_of(short))  # mutmut's diff reads the mutants from the working directory
        if not meta.exists():
            print(f"{path}: no results (did mutmut run?)", file=sys.stderr)
            reports.append(rep)
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        dup: Counter[str] = Counter()
        for name, code in sorted(codes.items(), key=lambda kv: _order(kv[0])):
            status = status_of(code)
            if status in DETECTED:
                rep.counts["timeout" if status == "timeout" else "killed"] += 1
                continue
            if status == "not checked":  # the run was stopped before this mutant
                rep.counts["unchecked"] += 1
                continue
            m = Mutant(name, short, function_of(name), status, change_of(name, path))
            base = key_of(m)
            dup[base] += 1
            m.key = base if dup[base] == 1 else f"{base}#{dup[base]}"
            seen.add(m.key)
            if m.key in accepted:
                rep.counts["accepted"] += 1
                continue
            rep.counts["survived"] += 1
            rep.survivors.append(m)
            new.append(m)
        reports.append(rep)
    stale = [k for k, e in accepted.items()
             if k not in seen and k.split(":", 1)[0] in modules]
    return reports, new, stale


def _order(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("__mutmut_")
    return head, int(n) if n.isdigit() else 0


def print_table(reports: list[ModuleReport]) -> None:
    head = f"{'module':<10} {'mutants':>7} {'killed':>7} {'survived':>8} {'accepted':>8} " \
           f"{'timeout':>7} {'unchecked':>9} {'score':>7} {'goal':>5}"
    print(head)
    print("-" * len(head))
    for r in reports:
        total = sum(r.counts.values())
        goal = f"{r.goal:.0%}" if r.goal else "-"
        flag = "" if r.score >= r.goal else "  BELOW GOAL"
        if r.counts["unchecked"]:
            flag += "  INCOMPLETE"
        print(f"{r.module:<10} {total:>7} {r.counts['killed']:>7} {r.counts['survived']:>8} "
              f"{r.counts['accepted']:>8} {r.counts['timeout']:>7} {r.counts['unchecked']:>9} "
              f"{r.score:>7.1%} {goal:>5}{flag}")


def toml_entry(m: Mutant) -> str:
    change = " | ".join(m.change)
    return (f'[[accepted]]\nkey = "{m.key}"\nchange = {json.dumps(change, ensure_ascii=False)}'
            f'\nreason = ""\n')


def run_module(module: str, args: argparse.Namespace) -> int:
    """Stage one module's work directory and run mutmut there (with *args.keep*, only the
    mutants not run yet: a stopped run's rest, changed functions, or the survivors
    *args.retest* resets)."""
    stage(module, keep=args.keep)
    if args.keep:
        remap_tests(module)
    names = survivors([module]) if args.keep and args.survivors_only else None
    if args.keep and args.retest and not names:
        print(f"== {module}: {reset_survivors([module])} survivors of the last run to re-run")
    # a work directory mutates one module, so mutmut alone runs what is not run yet there:
    # the rest of a stopped run, the reset survivors, and the functions changed since
    return run_mutmut(module, args.max_children, names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES))
    ap.add_argument("--keep", action="store_true", help="re-use the previous results")
    ap.add_argument("--retest", action="store_true", help="with --keep: re-run survivors")
    ap.add_argument("--survivors-only", action="store_true",
                    help="with --keep: re-run the last run's survivors and nothing else")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    modules = args.module or list(MODULES)
    t0 = time.monotonic()
    if not args.report_only:
        for module in modules:
            rc = run_module(module, args)
            if rc != 0:
                print(f"{module}: mutmut exited {rc}", file=sys.stderr)
                return rc
    reports, new, stale = collect(modules)
    elapsed = time.monotonic() - t0
    print()
    print_table(reports)
    out = {
        "elapsed_seconds": round(elapsed),
        "modules": {r.module: {"file": MODULES[r.module][0], **dict(r.counts),
                               "score": round(r.score, 4), "goal": r.goal,
                               "survivors": [{"key": m.key, "mutant": m.name,
                                              "status": m.status, "change": m.change}
                                             for m in r.survivors]}
                    for r in reports},
        "new_survivors": [m.key for m in new],
        "stale_accepted": stale,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    if stale:
        print(f"\n{len(stale)} accepted survivor(s) no longer survive (or no longer exist); "
              f"drop them from {ACCEPTED.relative_to(REPO)}:")
        for k in stale:
            print("   ", k)
    if new:
        print(f"\nNEW SURVIVORS ({len(new)}): not killed and not in "
              f"{ACCEPTED.relative_to(REPO)} (mutmut show NAME in "
              f"{WORK.relative_to(REPO)}/MODULE):")
        for m in new:
            print(f"  {m.key}  [{m.status}]  {m.name}")
            for line in m.change:
                print(f"      {line}")
        print("\n# entries to paste once judged:")
        for m in new:
            print(toml_entry(m))
    print(f"report: {REPORT.relative_to(REPO)}; {elapsed / 60:.1f} min")
    below = [r.module for r in reports if r.score < r.goal or r.counts["unchecked"]]
    return 1 if new or below else 0


if __name__ == "__main__":
    sys.exit(main())
