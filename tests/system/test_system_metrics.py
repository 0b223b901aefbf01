"""The history and the metrics in a booted system: Debian's prometheus-node-exporter scrapes
the textfile a run of architect-cleanup.service writes, and ``report --items --grep`` says
what a real run removed and why."""

from __future__ import annotations

import json
import re

from nspawn import Container
from test_system_package import set_conf, start, wait_for

NODE_EXPORTER = "prometheus-node-exporter.service"
TEXTFILE = "/var/lib/prometheus/node-exporter/architect_cleanup.prom"
SCRAPE = "curl -fsS --max-time 10 http://127.0.0.1:9100/metrics"


def scrape(box: Container) -> str:
    return box.run(SCRAPE, check=False).stdout


def test_node_exporter_serves_our_metrics_after_systemctl_start(installed: Container) -> None:
    box = installed
    wait_for(lambda: "node_exporter_build_info" in scrape(box), 60, "node_exporter on :9100")
    assert "architect_cleanup_" not in scrape(box)  # nothing before the first run
    start(box)
    prom = box.run(["stat", "-c", "%a %U", TEXTFILE]).stdout.split()
    assert prom == ["644", "root"]  # readable by node_exporter's user, replaced atomically
    text = scrape(box)
    assert re.search(r"^node_textfile_scrape_error 0$", text, re.M), text[-2000:]
    assert re.search(r"^architect_cleanup_last_run_success 1$", text, re.M)
    assert re.search(r"^architect_cleanup_last_run_dry_run 1$", text, re.M)
    assert re.search(r'^architect_cleanup_last_run_removed_items\{env="prod",target="backups"\} '
                     r"[1-9]", text, re.M)
    assert re.search(r'^architect_cleanup_filesystem_avail_bytes\{path="/srv/architect"\} ',
                     text, re.M)
    assert re.search(r'^architect_cleanup_table_rows\{database="prod",table="task_queue"\} ',
                     text, re.M)
    # the unit's sandbox let it write there (ReadWritePaths=) and nothing failed
    assert "history" not in box.sh("journalctl -u architect-cleanup -p warning --no-pager")


def test_report_items_grep_answers_what_removed_a_file(installed: Container) -> None:
    box = installed
    log = "/srv/architect/data/dashboard_5.log"  # 45 days old: the logs rule removes it
    assert box.exists(log)
    set_conf(box, "dry_run", "true", "false")
    start(box)
    assert not box.exists(log)
    out = box.sh(f"architect-cleanup report --items --grep {log}")
    line = next(x for x in out.splitlines() if log in x)
    assert " real " in line and " removed " in line and " logs " in line and "> 30d" in line
    doc = json.loads(box.sh("architect-cleanup report --json"))
    # `systemctl start` by hand: recorded as from systemctl ($TRIGGER_UNIT tells the timer)
    assert doc["runs"][-1]["source"] == "systemctl" and doc["runs"][-1]["removed"] > 0
    status = json.loads(box.sh("architect-cleanup status --json"))
    assert status["forecast"] and "no forecast yet" in status["forecast"][0]["line"]
