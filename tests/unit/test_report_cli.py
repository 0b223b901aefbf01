"""``report`` from the history database (runs, items, trends, forecast; JSON and CSV) and the
API's ``GET /metrics``."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from architect_cleanup import history as h
from architect_cleanup.api import create_app
from architect_cleanup.cli import main

from demo import build_tree

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TOKEN = "t" * 32


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A demo tree (real-time mtimes), a config naming it, a dry run then a real run."""
    root, tmp = tmp_path / "srv" / "architect", tmp_path / "tmp"
    build_tree(root, tmp)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root = "{root}"\n[logs]\ntmp_dir = "{tmp}"\n')
    monkeypatch.setenv("ARCHITECT_CLEANUP_CONFIG", str(cfg))
    assert cli("run")[0] == 0
    assert cli("run", "--force")[0] == 0
    return root, tmp


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def test_report_shows_the_runs_the_freed_space_the_growth_and_the_forecast(
        demo: tuple[Path, Path]) -> None:
    code, out = cli("report")
    assert code == 0
    runs = out.split("Freed per day")[0].strip().splitlines()[2:]
    assert len(runs) == 2 and " preview " in runs[0] and " real " in runs[1]
    freed = out.split("Freed per day (real runs):")[1].split("Growth per day:")[0]
    assert " logs " in freed and " backups " in freed
    assert "backups:prod" in out.split("Growth per day:")[1]
    assert "no forecast yet (2 of 6 samples)" in out.split("Forecast:")[1]


def test_report_json_carries_runs_trends_forecast_and_the_state_history(
        demo: tuple[Path, Path]) -> None:
    doc = json.loads(cli("report", "--json", "--per", "week")[1])
    assert [r["dry_run"] for r in doc["runs"]] == [True, False]
    assert doc["per"] == "week" and {f["target"] for f in doc["freed"]} >= {"logs", "backups"}
    assert all(f["runs"] == 1 for f in doc["freed"])  # the dry run frees nothing
    assert doc["forecast"] and doc["forecast"][0]["state"] == "too_few_samples"
    assert "line" in doc["forecast"][0]
    assert len(doc["history"]) == 2  # state.json's records, as before


def test_report_filters_by_target_and_environment(demo: tuple[Path, Path]) -> None:
    doc = json.loads(cli("report", "--json", "--target", "logs")[1])
    assert {r["target"] for r in doc["runs"]} == {"logs"} and doc["runs"][1]["removed"] > 0
    assert {f["target"] for f in doc["freed"]} == {"logs"}
    prod = json.loads(cli("report", "--json", "--target", "backups", "--env", "prod")[1])
    qa = json.loads(cli("report", "--json", "--target", "backups", "--env", "qa")[1])
    assert {r["env"] for r in prod["runs"]} == {"prod"}
    assert prod["runs"][1]["removed"] != qa["runs"][1]["removed"]


def test_report_csv_writes_one_row_per_run(demo: tuple[Path, Path]) -> None:
    code, out = cli("report", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["dry_run"] for r in rows] == ["True", "False"]
    assert int(rows[1]["removed"]) > 0


def test_report_items_grep_says_what_removed_a_file_and_why(demo: tuple[Path, Path]) -> None:
    root, _ = demo
    code, out = cli("report", "--items", "--grep", "dashboard_5.log")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("run started (UTC)")
    dry, real = lines[1:]
    assert " preview " in dry and " would remove " in dry and " real " in real
    assert " removed " in real
    assert f"{root}/data/dashboard_5.log" in real and "> 30d" in real and " logs " in real
    code, out = cli("report", "--items", "--grep", "no-such-file")
    assert code == 0 and "No items recorded with 'no-such-file' in their path" in out


def test_report_items_as_json_and_csv_with_filters(demo: tuple[Path, Path]) -> None:
    doc = json.loads(cli("report", "--items", "--json", "--target", "backups", "--env", "qa")[1])
    assert doc["items"] and {(i["target"], i["env"]) for i in doc["items"]} == {("backups", "qa")}
    assert {i["dry_run"] for i in doc["items"]} == {True, False}
    out = cli("report", "--items", "--csv", "--target", "logs", "-n", "3")[1]
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and all(r["target"] == "logs" and r["reason"] for r in rows)


def test_report_since_limits_the_runs_and_a_bad_age_is_a_usage_error(
        demo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(cli("report", "--json", "--since", "1h")[1])
    assert len(doc["runs"]) == 2
    with pytest.raises(SystemExit) as exc:
        cli("report", "--since", "3 fortnights")
    assert exc.value.code == 2
    assert "is not a duration" in capsys.readouterr().err


def test_report_without_a_history_database_shows_the_state_files_runs(
        demo: tuple[Path, Path], tmp_path: Path) -> None:
    for p in (tmp_path / "_state").glob(h.DB_NAME + "*"):
        p.unlink()
    code, out = cli("report")
    assert code == 0 and "no history database yet" in out
    assert len([x for x in out.splitlines() if " preview " in x or " real " in x]) == 2
    code, _ = cli("report", "--items")
    assert code == 1


def test_get_metrics_serves_the_exposition_behind_the_bearer_token(
        demo: tuple[Path, Path]) -> None:
    client = create_app(token=TOKEN, configure_logging=False).test_client()
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = r.get_data(as_text=True)
    assert "architect_cleanup_last_run_success 1.0" in text
    assert 'architect_cleanup_last_run_removed_items{env="prod",target="backups"}' in text
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_get_metrics_before_any_run_is_an_empty_valid_exposition() -> None:
    client = create_app(token=TOKEN, configure_logging=False).test_client()
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and "architect_cleanup_" not in r.get_data(as_text=True)


def test_a_run_started_through_the_api_is_recorded_too(demo: tuple[Path, Path]) -> None:
    client = create_app(token=TOKEN, configure_logging=False).test_client()
    r = client.post("/api/system/cleanup", json={"dry_run": True},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    doc = json.loads(cli("report", "--json")[1])
    assert [(x["source"], x["dry_run"]) for x in doc["runs"]][-1] == ("api", True)
    api_run = doc["runs"][-1]
    assert api_run["result"] == "success" and api_run["status"] == "success"
