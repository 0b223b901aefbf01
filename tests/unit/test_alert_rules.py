"""The example alert rules: valid for Debian's promtool, and they fire when they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "packaging" / "examples" / "architect-cleanup.rules.yml"
CASES = REPO / "tests" / "data" / "architect-cleanup.rules.test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


def test_the_example_rules_pass_promtool_check_rules() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 4 rules found" in res.stdout


def test_the_rules_fire_as_their_unit_cases_expect(tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / RULES.name)
    shutil.copy(CASES, tmp_path / CASES.name)
    res = promtool("test", "rules", CASES.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_the_rules_alert_on_the_four_conditions_the_operator_needs() -> None:
    text = RULES.read_text()
    for alert, expr in (("ArchitectCleanupNoRecentSuccess",
                         "architect_cleanup_last_success_timestamp_seconds > 2 * 3600"),
                        ("ArchitectCleanupRunFailed", "architect_cleanup_last_run_success == 0"),
                        ("ArchitectCleanupNewestBackupCorrupt",
                         "architect_cleanup_backup_newest_ok == 0"),
                        ("ArchitectCleanupDiskFillsSoon", "< 7 * 86400")):
        assert f"alert: {alert}" in text
        assert expr in text


def test_the_rules_are_shipped_as_an_example_of_the_package() -> None:
    examples = (REPO / "packaging" / "debian" / "architect-cleanup.examples").read_text()
    assert "packaging/examples/architect-cleanup.rules.yml" in examples.split()
