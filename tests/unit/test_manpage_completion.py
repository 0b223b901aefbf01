"""The manual page and the bash completion the package ships (issue 21, item 7)."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from sd_helpers import REPO

from architect_cleanup.cli import build_parser

MANPAGE = REPO / "packaging" / "architect-cleanup.1"
COMPLETION = REPO / "packaging" / "completion" / "architect-cleanup"
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


def rendered() -> str:
    proc = subprocess.run(["man", "--warnings", "-l", str(MANPAGE)], capture_output=True,
                          text=True, check=False, timeout=60,
                          env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0",
                                   MANPAGER="cat", PAGER="cat"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # groff's warnings (man --warnings)
    plain = re.sub(".\b", "", proc.stdout)  # overstrike bold and underline
    return plain.replace("\u2010", "-").replace("\u2212", "-")


def test_the_man_page_renders_without_warnings_and_has_the_sections() -> None:
    text = rendered()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS",
                    "CONFIGURATION", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES",
                    "SEE ALSO"):
        assert f"\n{section}\n" in text, section


def test_the_man_page_covers_every_command_option_and_exit_code() -> None:
    text = rendered()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():  # type: ignore[union-attr]
        assert f"\n       {name}" in text or f" {name} " in text, name
        for action in sp._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in text, (name, flag)
    for code in ("0", "1", "2", "75", "77"):
        assert re.search(rf"\n       {code} +[A-Z]", text), code


def test_the_man_page_names_every_key_of_the_shipped_config() -> None:
    text = rendered()
    doc = tomllib.loads((REPO / "packaging" / "config.toml").read_text())
    keys = set()
    for key, value in doc.items():
        if isinstance(value, dict):
            assert f"[{key}]" in text, key
            keys.update(k for k, v in value.items() if not isinstance(v, dict))
        else:
            keys.add(key)
    keys.update(("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                 "keep_yearly", "keep_within", "max_total_size", "min_free_space",
                 "keep_min", "table"))
    missing = sorted(k for k in keys if k not in text)
    assert missing == []


def complete(line: str) -> list[str]:
    """COMPREPLY for *line* (the cursor at its end), with Debian's bash-completion."""
    words = line.split(" ")
    script = (f"source {BASH_COMPLETION}\nsource {COMPLETION}\n"
              f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_architect_cleanup architect-cleanup \"${COMP_WORDS[COMP_CWORD]}\" "
              "\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return sorted(w for w in proc.stdout.splitlines() if w)


@pytest.mark.skipif(not BASH_COMPLETION.exists(), reason="bash-completion is not installed "
                    "(the Makefile installs it)")
def test_bash_completion_completes_commands_options_and_targets() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert complete("architect-cleanup ") == sorted(sub.choices)  # type: ignore[arg-type]
    assert complete("architect-cleanup r") == ["report", "run"]
    assert "--force" in complete("architect-cleanup run --")
    assert "--force" not in complete("architect-cleanup plan --")
    assert complete("architect-cleanup config ") == ["check"]
    assert complete("architect-cleanup run --only ") == sorted(
        ["backups", "logs", "tasks", "errors", "prompts", "temp", "rules", "orphans"])
    assert complete("architect-cleanup run --only logs,t") == ["logs,tasks", "logs,temp"]
    assert complete("architect-cleanup --config /etc/x.toml st") == ["status"]
