"""An operator's day (issue 21): the README's guide walked in order, an upgrade with the
documented command, every command as the dashboard's user, a purge that keeps the
administrator's own drop-ins.

Each test boots a fresh container with the demo dashboard tree; the packages are the ones
``make deb`` built, installed with apt exactly as the README says.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from harness import API_PACKAGE, APT_ENV, PACKAGE, REPO, SHARE_INSIDE, apt_install, seed_tree
from nspawn import Container
from test_system_package import ROOT, STATE, count, state, tree_fingerprint

TOKEN = "/etc/architect-cleanup/api-token"
DROP_IN = "/etc/architect-cleanup/config.d/50-clean.toml"
GUIDE_DIR = "/root/guide"  # where the operator runs the guide: ./build/ holds the debs


def _debs_in_share(debs: dict[str, Path]) -> tuple[str, str]:
    if API_PACKAGE not in debs:
        pytest.fail(f"no {API_PACKAGE}_*.deb: build it with `make deb`")
    return (f"{SHARE_INSIDE}/debs/{debs[PACKAGE].name}",
            f"{SHARE_INSIDE}/debs/{debs[API_PACKAGE].name}")


def _assume_yes(box: Container) -> None:
    """apt as an operator answers it: yes (so the README's `apt install` runs unchanged)."""
    box.write_file("/etc/apt/apt.conf.d/90systest-yes", 'APT::Get::Assume-Yes "true";\n')


# --- the README's operator guide, in order --------------------------------------------------


def guide_commands() -> list[str]:
    """Every shell command of the README's "Operator guide", in order: the ```sh blocks
    (continuation lines joined, comments dropped) and the ``$ `` lines of ```console
    blocks."""
    text = (REPO / "README.md").read_text()
    guide = text[text.index("## Operator guide"):text.index("## Development")]
    commands: list[str] = []
    for lang, body in re.findall(r"```(sh|console)\n(.*?)```", guide, re.S):
        lines = body.replace("\\\n", " ").splitlines()
        for raw in lines:
            if lang == "console" and not raw.startswith("$ "):
                continue
            text = raw[2:] if lang == "console" else raw
            line = re.sub(r"\s+#.*$", "", text).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def is_preview(cmd: str) -> bool:
    """A command the guide presents as looking, not cleaning."""
    if re.search(r"\barchitect-cleanup (plan|run)\b", cmd):
        return "--force" not in cmd
    if cmd.startswith("curl") and "-X POST" in cmd:
        return '"dry_run": true' in cmd
    return cmd.startswith(("architect-cleanup", "journalctl", "systemctl list-timers"))


def test_the_operator_guide_walked_in_order_with_dry_run_false_previews_remove_nothing(
        container: Container, debs: dict[str, Path]) -> None:
    box = container
    seed_tree(box)
    _assume_yes(box)
    # Test hygiene, not the guide: the hourly timer must not clean in the middle of the walk
    # (with dry_run = false it would, and a preview would seem to have removed files).
    box.write_file("/etc/systemd/system/architect-cleanup.timer.d/50-not-now.conf",
                   "[Timer]\nOnCalendar=\nOnCalendar=2099-01-01\n")
    core, api = _debs_in_share(debs)
    box.run(f"mkdir -p {GUIDE_DIR}/build && cp {core} {api} {GUIDE_DIR}/build/ "
            f"&& cp {core} {api} {GUIDE_DIR}/")
    commands = guide_commands()
    assert any(c.startswith("apt install ./build/") for c in commands), commands
    assert "architect-cleanup run -v --only backups" in commands  # the GFS example
    previews = [c for c in commands if is_preview(c)]
    assert len(previews) >= 8, previews
    ran: list[str] = []
    dropped_in = False
    for cmd in commands:
        if cmd.startswith("make "):
            continue  # built on the host: the share holds the result
        if box.exists("/usr/bin/architect-cleanup") and not dropped_in:
            # the operator of issue 21: `dry_run = false` set before looking
            box.write_file(DROP_IN, "dry_run = false\n")
            dropped_in = True
        preview = is_preview(cmd)
        before = tree_fingerprint(box, ROOT, "/tmp") if preview else None
        proc = box.run(["bash", "-c", f"cd {GUIDE_DIR}; TOKEN=$(cat {TOKEN} 2>/dev/null); {cmd}"],
                       check=False, env=APT_ENV, timeout=300)
        assert "Traceback" not in proc.stderr, (cmd, proc.stderr)
        assert proc.returncode == 0, (cmd, proc.returncode, proc.stdout[-2000:],
                                      proc.stderr[-2000:])
        if preview and cmd.startswith("curl"):
            # an API run, dry runs too, adds its row to each database's activity_log (the
            # README says so): nothing may be removed, no other file changed
            after = tree_fingerprint(box, ROOT, "/tmp")
            assert [ln.split()[-1] for ln in after] == [ln.split()[-1] for ln in before or []]
            assert [ln for ln in after if not ln.endswith((".db", "-wal", "-shm"))] == [
                ln for ln in before or [] if not ln.endswith((".db", "-wal", "-shm"))], cmd
        elif preview:
            assert tree_fingerprint(box, ROOT, "/tmp") == before, f"{cmd!r} removed files"
            if re.search(r"\barchitect-cleanup (plan|run)\b", cmd) and "--json" not in cmd:
                assert "PREVIEW (dry run) - nothing was changed" in proc.stdout, cmd
                assert not re.search(r"^(removed|remove) ", proc.stdout, re.M), cmd
        ran.append(cmd)
    assert dropped_in
    assert any("architect-cleanup run --force" in c for c in ran)
    # the real runs of the guide did clean, and the history tells them from the previews
    assert count(box, f"{ROOT}/data/prod/backups/architect_*.db") == 11
    history = state(box)["history"]
    assert [h["dry_run"] for h in history].count(False) >= 1
    assert all(h["source"] == "cli" for h in history if h["dry_run"] is False)


# --- item 2: the documented upgrade ---------------------------------------------------------


def _bumped(box: Container, deb: str, version: str, new: str, out_dir: str) -> str:
    """*deb* re-packed as version *new* (and its dependency on architect-cleanup)."""
    work = f"/root/repack-{Path(deb).name}"
    box.run(f"rm -rf {work} && dpkg-deb -R {deb} {work}")
    control = box.read_file(f"{work}/DEBIAN/control")
    control = re.sub(r"^Version: .*$", f"Version: {new}", control, flags=re.M)
    # as a build of the new source version would have it: architect-cleanup of that version
    control = control.replace(f"architect-cleanup (>= {version})", f"architect-cleanup (>= {new})")
    control = control.replace(f"architect-cleanup (<< {version}.1~)",
                              f"architect-cleanup (<< {new}.1~)")
    box.write_file(f"{work}/DEBIAN/control", control)
    name = Path(deb).name.replace(f"_{version}_", f"_{new}_")
    box.run(f"mkdir -p {out_dir} && dpkg-deb --root-owner-group -b {work} {out_dir}/{name}"
            " >/dev/null")
    return f"{out_dir}/{name}"


def test_upgrading_both_packages_with_the_documented_command_keeps_token_config_history(
        container: Container, debs: dict[str, Path]) -> None:
    box = container
    seed_tree(box)
    _assume_yes(box)
    core, api = _debs_in_share(debs)
    version = box.sh(f"dpkg-deb -f {core} Version").strip()
    new = f"{version}+upgrade1"
    box.run(f"mkdir -p {GUIDE_DIR}/build && cp {core} {api} {GUIDE_DIR}/build/")
    install = ("apt install ./build/architect-cleanup_*.deb "
               "./build/architect-cleanup-api_*_all.deb")
    assert f"{install}\n" in (REPO / "README.md").read_text()  # the documented command
    box.run(["bash", "-c", f"cd {GUIDE_DIR} && {install}"], env=APT_ENV, timeout=300)
    token = box.read_file(TOKEN)
    box.write_file(DROP_IN, "dry_run = false\n")
    conf = box.read_file("/etc/architect-cleanup/config.toml")
    box.write_file("/etc/architect-cleanup/config.toml",
                   conf.replace("[logs]\n", "[logs]\n# edited by the operator\n", 1))
    box.run("systemctl start architect-cleanup.service")
    history = state(box)["history"]
    assert len(history) == 1 and history[0]["dry_run"] is False

    # the next version, built from the same packages, in a fresh build/
    box.run(f"rm -rf {GUIDE_DIR}/build")
    _bumped(box, core, version, new, f"{GUIDE_DIR}/build")
    _bumped(box, api, version, new, f"{GUIDE_DIR}/build")
    proc = box.run(["bash", "-c", f"cd {GUIDE_DIR} && {install}"], env=APT_ENV, timeout=300)
    assert "Removing" not in proc.stdout and "REMOVED" not in proc.stdout, proc.stdout
    assert "2 upgraded" in proc.stdout, proc.stdout
    for package in (PACKAGE, API_PACKAGE):
        assert box.sh(f"dpkg-query -W -f '${{Version}} ${{Status}}' {package}") == \
            f"{new} install ok installed"
    assert box.read_file(TOKEN) == token
    assert "# edited by the operator" in box.read_file("/etc/architect-cleanup/config.toml")
    assert box.read_file(DROP_IN) == "dry_run = false\n"
    assert state(box)["history"] == history
    assert box.sh("systemctl is-enabled architect-cleanup.timer").strip() == "enabled"
    assert box.sh("systemctl is-active architect-cleanup-api.socket").strip() == "active"
    box.run("systemctl start architect-cleanup.service")
    assert len(state(box)["history"]) == 2
    status = json.loads(box.sh(f'curl -sS -H "Authorization: Bearer $(cat {TOKEN})" '
                               "http://127.0.0.1:8787/api/system/cleanup/status"))
    assert status["last_run"] is not None


# --- item 3: every command as the dashboard's user ------------------------------------------


def test_every_command_as_the_dashboards_user_is_one_line_and_an_exit_code(
        container: Container, debs: dict[str, Path]) -> None:
    box = container
    seed_tree(box)
    apt_install(box, debs[PACKAGE])
    box.sh("useradd --system --user-group --no-create-home --shell /usr/sbin/nologin architect"
           f" && chown -R architect:architect {ROOT}/data")
    box.run("systemctl start architect-cleanup.service")  # the lock and state exist
    before = tree_fingerprint(box, ROOT, "/tmp")
    lock = "/run/architect-cleanup/cleanup.lock"
    expected = {
        "run": 77, "plan": 77, "run -v --only backups": 77, "run --force": 77,
        "run --force --yes": 77, "run --json": 77, "--dry-run": 77,
        "status": 0, "status --json": 0, "report": 0, "report --json": 0,
        "config check": 0, "config check --json": 0, "--status": 0, "--version": 0,
        "--stop": 1, "--daemon": 1,
    }
    for args, code in expected.items():
        proc = box.run(["runuser", "-u", "architect", "--", "architect-cleanup",
                        *shlex.split(args)], check=False)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        if code == 77:
            assert proc.stderr == (f"architect-cleanup: cannot take the run lock {lock}: "
                                   "Permission denied; run it as root (sudo architect-cleanup"
                                   " ...), as the service does\n"), args
        if code == 1:
            assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert tree_fingerprint(box, ROOT, "/tmp") == before
    assert box.sh("systemctl is-enabled architect-cleanup.timer").strip() == "enabled"


# --- item 7: what the package ships, and a purge that keeps the operator's files -------------


def test_the_package_ships_completion_man_page_and_an_empty_config_d(
        container: Container, debs: dict[str, Path]) -> None:
    box = container
    apt_install(box, debs[PACKAGE])
    files = box.sh(f"dpkg-query -L {PACKAGE}").splitlines()
    assert "/usr/share/bash-completion/completions/architect-cleanup" in files
    assert "/usr/share/man/man1/architect-cleanup.1.gz" in files
    assert "/etc/architect-cleanup/config.d" in files
    assert box.sh("ls -A /etc/architect-cleanup/config.d") == ""
    page = box.sh("zcat /usr/share/man/man1/architect-cleanup.1.gz")
    assert ".SH EXIT STATUS" in page and "backups.policy" in page


def test_apt_purge_keeps_the_administrators_own_drop_ins(
        container: Container, debs: dict[str, Path]) -> None:
    box = container
    seed_tree(box)
    apt_install(box, debs[PACKAGE])
    mine = "/etc/architect-cleanup/config.d/50-local.toml"
    box.write_file(mine, "dry_run = false\n")
    box.run("systemctl start architect-cleanup.service")
    assert box.exists(STATE)
    box.run(["apt-get", "purge", "-y", PACKAGE], env=APT_ENV)
    assert box.read_file(mine) == "dry_run = false\n"  # the administrator's, not ours
    assert not box.exists("/etc/architect-cleanup/config.toml")  # the conffile goes
    assert not box.exists("/var/lib/architect-cleanup")  # and the state
    assert box.sh(f"dpkg-query -W -f '${{db:Status-Status}}' {PACKAGE} 2>/dev/null || true"
                  ) in ("", "not-installed")
