"""The benchmark's result: one table (goal beside each figure, pass or fail) and JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Row:
    part: str  # "1", "2", ...
    work: str  # what was measured
    figure: str  # the measurement, as printed
    goal: str  # the goal, as printed
    ok: bool | None  # None: informational
    value: float | None = None  # the number the goal is about (ratio, MB, ms)


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, *args: Any, **kw: Any) -> None:
        self.rows.append(Row(*args, **kw))

    @property
    def passed(self) -> bool:
        return all(r.ok is not False for r in self.rows)

    def table(self) -> str:
        heads = ("", "work", "measured", "goal", "")
        cells = [(r.part, r.work, r.figure, r.goal,
                  "" if r.ok is None else "PASS" if r.ok else "FAIL") for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(heads)]
        sep = "  "

        def line(cols: tuple[str, ...]) -> str:
            return sep.join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()

        out = [self.title, line(heads), sep.join("-" * w for w in widths)]
        out += [line(c) for c in cells]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "passed": self.passed, "meta": self.meta,
                "rows": [asdict(r) for r in self.rows], "details": self.details}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        os.replace(tmp, path)


def machine() -> dict[str, Any]:
    """Where and on what the figures were taken."""
    def cmd(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, check=False,
                                  cwd=REPO).stdout.strip()
        except OSError:
            return ""

    mount = ""
    try:
        dev = os.stat(REPO).st_dev
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                major, minor = (int(x) for x in parts[2].split(":"))
                if os.makedev(major, minor) == dev:
                    sep = parts.index("-")
                    mount = f"{parts[sep + 1]} {parts[4]} ({parts[5]}, {parts[sep + 3]})"
    except (OSError, ValueError):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": cmd("git", "rev-parse", "--short", "HEAD"),
        "dirty": bool(cmd("git", "status", "--porcelain", "--untracked-files=no")),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "find": cmd("find", "--version").splitlines()[0] if cmd("find", "--version") else "",
        "systemd": cmd("systemd-tmpfiles", "--version").splitlines()[0]
        if cmd("systemd-tmpfiles", "--version") else "",
        "sqlite": __import__("sqlite3").sqlite_version,
        "filesystem": mount,
    }
