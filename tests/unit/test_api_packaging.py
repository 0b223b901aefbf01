"""The second binary package, architect-cleanup-api: what it ships, what it depends on, and
its maintainer scripts — the bearer token is created once with a random value (mode 0600),
kept on upgrade and when an administrator replaced it, and removed on purge.

The scripts honour ``$DPKG_ROOT``, so they run here for real against a scratch root; the
system tests install the built package with apt in a booted container."""

from __future__ import annotations

import re
import stat
import subprocess
import tomllib
from pathlib import Path

from sd_helpers import REPO

DEBIAN = REPO / "packaging" / "debian"
TOKEN = "etc/architect-cleanup/api-token"


def _script(name: str, root: Path, *args: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPKG_ROOT": str(root)}
    subprocess.run(["sh", "-e", str(DEBIAN / f"architect-cleanup-api.{name}"), *args],
                   env=env, check=True, capture_output=True, text=True)


def _stanza(package: str) -> str:
    control = (DEBIAN / "control").read_text()
    return control.split(f"\nPackage: {package}\n", 1)[1].split("\n\n", 1)[0]


def _depends(package: str) -> set[str]:
    m = re.search(r"^Depends:(.*?)(?=^\S)", _stanza(package) + "\nX:", re.S | re.M)
    assert m
    return {d.strip().split()[0] for d in m.group(1).split(",") if d.strip()}


def test_the_api_package_depends_on_the_core_flask_gunicorn_and_chart_js() -> None:
    assert _depends("architect-cleanup-api") == {
        "architect-cleanup", "gunicorn", "python3-flask", "libjs-chart.js", "${misc:Depends}",
        "${python3:Depends}"}
    # architect-cleanup of the same source version: an _all package cannot pin the
    # binary version of an _any one (a binNMU of the core would break it; lintian)
    stanza = _stanza("architect-cleanup-api")
    assert "architect-cleanup (>= ${source:Version})" in stanza
    assert "architect-cleanup (<< ${source:Version}.1~)" in stanza
    assert not {"gunicorn", "python3-flask"} & _depends("architect-cleanup")


def test_the_api_modules_and_units_go_to_the_api_package_only() -> None:
    install = (DEBIAN / "architect-cleanup-api.install").read_text().split("\n")
    modules = ["api.py", "api_schema.py", "gunicorn_conf.py"]
    for m in modules:
        assert f"usr/lib/python3*/dist-packages/architect_cleanup/{m}" in install
        assert (REPO / "architect_cleanup" / m).is_file()
    assert "systemd/architect-cleanup-api.socket lib/systemd/system/" in install
    assert "systemd/architect-cleanup-api.service lib/systemd/system/" in install
    rules = (DEBIAN / "rules").read_text()
    for m in modules:
        assert f"-Xarchitect_cleanup/{m}" in rules  # excluded from the core package


def test_the_panel_with_its_pages_and_script_goes_to_the_api_package() -> None:
    install = (DEBIAN / "architect-cleanup-api.install").read_text().split("\n")
    assert "usr/lib/python3*/dist-packages/architect_cleanup/panel" in install
    assert "-Xarchitect_cleanup/panel" in (DEBIAN / "rules").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "architect_cleanup.panel" in pyproject["tool"]["setuptools"]["packages"]
    shipped = pyproject["tool"]["setuptools"]["package-data"]["architect_cleanup.panel"]
    panel = REPO / "architect_cleanup" / "panel"
    files = {p.relative_to(panel).as_posix() for p in panel.rglob("*")
             if p.is_file() and p.suffix not in {".pyc", ".py"}}
    assert files == {f for pattern in shipped for f in
                     (p.relative_to(panel).as_posix() for p in panel.glob(pattern))}
    assert {"templates/base.html", "static/panel.js", "static/panel.css"} <= files


def test_the_first_installation_writes_a_random_root_only_token(tmp_path: Path) -> None:
    _script("postinst", tmp_path, "configure", "")
    token = tmp_path / TOKEN
    st = token.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (0, 0)
    text = token.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", text)
    assert not (tmp_path / (TOKEN + ".dpkg-new")).exists()

    other = tmp_path / "other"
    _script("postinst", other, "configure", "")
    assert (other / TOKEN).read_text() != text  # random, per machine


def test_an_upgrade_keeps_the_token_and_so_does_a_reinstallation(tmp_path: Path) -> None:
    _script("postinst", tmp_path, "configure", "")
    before = (tmp_path / TOKEN).read_text()
    _script("postinst", tmp_path, "configure", "0.1.0")
    assert (tmp_path / TOKEN).read_text() == before


def test_a_token_the_administrator_wrote_is_kept(tmp_path: Path) -> None:
    (tmp_path / TOKEN).parent.mkdir(parents=True)
    (tmp_path / TOKEN).write_text("my-own-token-0123456789\n")
    _script("postinst", tmp_path, "configure", "")
    assert (tmp_path / TOKEN).read_text() == "my-own-token-0123456789\n"


def test_remove_keeps_the_token_and_purge_removes_it(tmp_path: Path) -> None:
    _script("postinst", tmp_path, "configure", "")
    _script("postrm", tmp_path, "remove")
    assert (tmp_path / TOKEN).exists()
    _script("postrm", tmp_path, "purge")
    assert not (tmp_path / TOKEN).exists()
    assert not (tmp_path / TOKEN).parent.exists()  # it was the directory's only file


def test_purge_leaves_the_core_packages_configuration_alone(tmp_path: Path) -> None:
    _script("postinst", tmp_path, "configure", "")
    (tmp_path / "etc/architect-cleanup/config.toml").write_text("dry_run = true\n")
    _script("postrm", tmp_path, "purge")
    assert (tmp_path / "etc/architect-cleanup/config.toml").exists()
