"""Hostile strings read back from the real journal: what a user who can write a dashboard
database (a trigger's RAISE message, a table's name) and file names in the tree puts into the
product's messages reaches journald escaped, in ``MESSAGE`` and every ``CLEANUP_*`` field.

``journalctl -o json`` shows a field holding a control character or bytes that are not UTF-8
as an array of byte values instead of a string, so "every field is a string without a control
character" is exactly "nothing raw reached the journal".
"""

from __future__ import annotations

import json
import shlex

from nspawn import Container

ROOT = "/srv/architect"
MARK = "FORGED"
#: newline, CR, OSC with BEL, CSI, U+202E, U+2028, NEL
HOSTILE = [f"\n{MARK} Space freed: 0 MB", f"\r{MARK}", f"\x1b]0;{MARK}\x07",
           f"\x1b[2J\x1b[31m{MARK}", f"\u202e{MARK}", f"\u2028{MARK}", f"\x85{MARK}"]
RAW = ("\n", "\r", "\x1b", "\x07", "\x85", "\u2028", "\u202e")

SPOIL = """\
import sqlite3, sys
db, message, table = sys.argv[1:4]
con = sqlite3.connect(db, isolation_level=None)
con.execute("CREATE TRIGGER refuse BEFORE DELETE ON task_queue "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
con.execute(f'CREATE TABLE "{table}" (a INTEGER, b INTEGER, '
            "FOREIGN KEY (a, b) REFERENCES task_queue)")
"""


def test_hostile_database_strings_reach_the_journal_escaped(installed: Container) -> None:
    box = installed
    box.write_file("/root/spoil.py", SPOIL)
    message, table = "".join(HOSTILE), "child" + "".join(HOSTILE)
    box.sh(shlex.join(["python3", "/root/spoil.py", f"{ROOT}/data/prod/architect.db", message,
                       table]))
    old_log = f"{ROOT}/logs/old{HOSTILE[0]}{HOSTILE[2]}.log"
    box.sh(shlex.join(["touch", "-d", "2000-01-01", old_log]))
    box.sh("sed -i 's/^dry_run = true$/dry_run = false/' /etc/architect-cleanup/config.toml")
    box.run(["systemctl", "start", "architect-cleanup.service"], check=False)
    out = box.sh("journalctl -u architect-cleanup -o json --no-pager")
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "architect-cleanup"]
    texts = [str(e.get("MESSAGE")) for e in ours]
    assert any("does not match a key" in t for t in texts), texts
    assert any("\\x1b" in t for t in texts), texts
    bad = []
    for e in ours:
        for key, value in e.items():
            if key != "MESSAGE" and not key.startswith("CLEANUP_"):
                continue
            if not isinstance(value, str) or any(c in value for c in RAW):
                bad.append(f"{key}={value!r:.200}")
    assert bad == []
