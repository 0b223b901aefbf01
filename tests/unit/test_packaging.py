"""The Debian packaging's promises that can be checked without building: the shipped
configuration is the built-in defaults (dry run!), documents every key, and the version is
the same in the Python package and debian/changelog."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from sd_helpers import REPO

from architect_cleanup import __version__
from architect_cleanup.config import Config, load_config, parse_config

SHIPPED = REPO / "packaging" / "config.toml"
DEBIAN = REPO / "packaging" / "debian"


def test_the_shipped_rule_examples_parse_when_uncommented() -> None:
    text = SHIPPED.read_text()
    rules = text.split("[rules]", 1)[1].split("\n[orphans]", 1)[0]
    uncommented = "\n".join(line[1:] if line.startswith("#") and not line.startswith("# ")
                            and line != "#" else line for line in rules.splitlines())
    doc = tomllib.loads(text.split("[rules]", 1)[0] + "[rules]" + uncommented)
    parsed = parse_config(doc)  # valid against the built-in database paths
    assert [r.name for r in parsed.rules.files] == ["db-copies", "finder-duplicates",
                                                    "request-log", "request-log-compressed"]
    assert {r.table for r in parsed.rules.tables} >= {
        "activity_log", "resource_consumption", "llm_provider_health", "notifications",
        "claude_interactions", "sessions"}


def test_the_shipped_config_parses_to_exactly_the_built_in_defaults() -> None:
    cfg = load_config(str(SHIPPED), environ={})
    assert cfg.sources == (str(SHIPPED),)
    assert cfg.replace(sources=()) == Config()


def test_the_shipped_config_is_a_dry_run() -> None:
    assert tomllib.loads(SHIPPED.read_text())["dry_run"] is True
    assert load_config(str(SHIPPED), environ={}).dry_run is True


def _keys(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for k, v in doc.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, f"{prefix}{k}.")
    return out


def _commented_retention(text: str) -> dict[str, Any]:
    """The [backups.retention] numbers, shipped commented out (a written number would win over
    a [backups.policy.default] an operator adds in a drop-in)."""
    section = text.split("[backups.retention]", 1)[1].split("\n[", 1)[0]
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#(\w+) = (\d+)$", section, re.M)}


def test_the_shipped_config_lists_every_key_with_its_default_value() -> None:
    text = SHIPPED.read_text()
    shipped = tomllib.loads(text)
    retention = _commented_retention(text)
    assert retention == dict(Config().backups.retention)
    shipped["backups"]["retention"] = retention
    # the notification channels are arrays of tables an operator adds (shown commented)
    shipped["notify"] |= {"email": [], "webhook": [], "apprise": []}
    assert "#   [[notify.webhook]]" in text
    # the rules and the orphans' references are shipped as commented examples
    assert "#[[rules.files]]" in text and "#[[rules.tables]]" in text
    assert "\n#references = [" in text
    expected = _keys(Config().to_dict()) - {"rules.files", "rules.tables", "orphans.references"}
    assert _keys(shipped) == expected


def test_every_table_and_key_group_of_the_shipped_config_has_a_comment() -> None:
    lines = SHIPPED.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("[") or re.match(r"^(root|environments|dry_run) =", line):
            before = lines[i - 1] if i else ""
            after = lines[i + 1] if i + 1 < len(lines) else ""
            assert before.startswith("#") or after.startswith("#"), line


def _changelog_version() -> str:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.match(r"architect-cleanup \(([^)]+)\) ", first)
    assert m, first
    return m.group(1)


def test_the_package_version_is_the_python_version() -> None:
    version = _changelog_version().split(":")[-1].rsplit("-", 1)[0]
    assert version == __version__


def test_make_deb_refuses_a_changelog_with_another_version(tmp_path: Path) -> None:
    if shutil.which("dpkg-parsechangelog") is None:
        pytest.skip("dpkg-dev is not installed")
    (tmp_path / "architect_cleanup").mkdir()
    (tmp_path / "packaging" / "debian").mkdir(parents=True)
    shutil.copy2(REPO / "Makefile", tmp_path)
    shutil.copy2(REPO / "architect_cleanup" / "__init__.py", tmp_path / "architect_cleanup")
    changelog = (DEBIAN / "changelog").read_text()
    (tmp_path / "packaging" / "debian" / "changelog").write_text(
        changelog.replace(f"({_changelog_version()})", "(9.9.9)", 1))
    proc = subprocess.run(["make", "-s", "version-check"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode != 0
    assert f"has '{__version__}'" in proc.stderr and "'9.9.9'" in proc.stderr
    (tmp_path / "packaging" / "debian" / "changelog").write_text(changelog)
    ok = subprocess.run(["make", "-s", "version-check"], cwd=tmp_path, capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0, ok.stderr


def test_the_package_ships_the_units_catalog_and_conffile() -> None:
    install = (DEBIAN / "architect-cleanup.install").read_text()
    assert "systemd/architect-cleanup.service lib/systemd/system/" in install
    assert "systemd/architect-cleanup.timer lib/systemd/system/" in install
    assert "systemd/architect-cleanup.catalog usr/lib/systemd/catalog/" in install
    assert "packaging/config.toml etc/architect-cleanup/" in install


def test_every_subpackage_is_listed_for_setuptools_so_the_package_ships_it() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "architect_cleanup").rglob("__init__.py")}
    assert found - listed == set()


def test_only_the_timer_and_the_api_socket_are_handed_to_dh_installsystemd() -> None:
    rules = (DEBIAN / "rules").read_text()
    calls = [line.strip() for line in rules.splitlines()
             if line.strip().startswith("dh_installsystemd")]
    assert calls == ["dh_installsystemd -parchitect-cleanup architect-cleanup.timer",
                     "dh_installsystemd -parchitect-cleanup-api architect-cleanup-api.socket"]


def test_the_package_depends_on_debian_packages_only_and_not_on_the_api_stack() -> None:
    control = (DEBIAN / "control").read_text()
    binary = control.split("\nPackage: architect-cleanup\n", 1)[1]
    depends = re.search(r"^Depends:(.*?)^\S", binary, re.S | re.M)
    assert depends
    names = {d.strip().split()[0] for d in depends.group(1).split(",") if d.strip()}
    assert names == {"python3-systemd", "python3-tomli-w", "${misc:Depends}",
                     "${python3:Depends}", "${shlibs:Depends}"}  # the C extension: libc


def test_purge_removes_configuration_state_and_the_runtime_directory() -> None:
    postrm = (DEBIAN / "architect-cleanup.postrm").read_text()
    purge = postrm.split("purge)", 1)[1].split(";;", 1)[0]
    for path in ("/etc/architect-cleanup", "/var/lib/architect-cleanup",
                 "/run/architect-cleanup"):
        assert path in purge


def test_a_default_policy_in_a_drop_in_applies_to_every_environment(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text(SHIPPED.read_text())
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "50-policy.toml").write_text(
        "[backups.policy.default]\nkeep_daily = 7\nkeep_weekly = 4\n")
    cfg = load_config(str(main), environ={})
    for env in cfg.environments:
        policy, source = cfg.backups.policy_for(env)
        assert policy.keep_daily == 7 and policy.keep_weekly == 4, (env, source)
