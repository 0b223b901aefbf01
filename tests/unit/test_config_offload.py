"""[backups.verify], [backups.compress], [backups.offload] and its remote policies: read in the
declared style, every problem reported at once."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from architect_cleanup.config import Config, ConfigError, parse_config
from architect_cleanup.retention import Policy


def creds(tmp_path: Path, mode: int = 0o600) -> str:
    p = tmp_path / "s3"
    p.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    p.chmod(mode)
    return str(p)


def problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return e.value.problems


def test_the_defaults_verify_quick_compress_never_and_no_offload() -> None:
    b = Config().backups
    assert b.verify.check == "quick" and b.verify.remove_corrupt_after is None
    assert b.compress.after is None and b.compress.level == 3
    assert not b.offload.enabled and b.offload.upload == "before_delete"
    assert b.offload.policy_for("prod") is None
    assert "*.db.zst" in b.patterns


def test_a_full_offload_configuration_is_read(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = parse_config({"backups": {
        "verify": {"check": "full", "remove_corrupt_after": "30d"},
        "compress": {"after": "1d", "level": 9},
        "offload": {"url": "s3://bkt/arch", "endpoint": "https://s3.example.net",
                    "region": "eu-1", "credentials": creds(tmp_path), "upload": "all",
                    "bandwidth": "10M", "policy": {"prod": {"keep_daily": 30},
                                                   "default": {"keep_last": 3}}}}})
    b = cfg.backups
    assert b.verify.remove_corrupt_after == timedelta(days=30)
    assert b.compress.after == timedelta(days=1) and b.compress.level == 9
    assert b.offload.bandwidth == 10 * 1024**2 and b.offload.upload == "all"
    assert b.offload.policy_for("prod") == (Policy(keep_daily=30),
                                            "backups.offload.policy.prod")
    assert b.offload.policy_for("qa") == (Policy(keep_last=3), "backups.offload.policy.default")
    assert cfg.to_dict()["backups"]["offload"]["policy"]["prod"] == {"keep_daily": 30}


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"backups": {
        "verify": {"check": "sometimes", "typo": 1},
        "compress": {"level": 0, "after": "soon"},
        "offload": {"url": "https://bucket", "endpoint": "s3.example.net", "upload": "never",
                    "credentials": "relative/path", "bandwidth": "fast",
                    "policy": {"prod": {"keep_dayly": 3}, "nowhere": {"keep_last": 1}}}}})
    text = "\n".join(found)
    for k in ("backups.verify.check", "backups.verify.typo", "backups.compress.level",
              "backups.compress.after", "backups.offload.url", "backups.offload.endpoint",
              "backups.offload.upload", "backups.offload.credentials",
              "backups.offload.bandwidth", "backups.offload.policy.prod.keep_dayly",
              "backups.offload.policy.nowhere"):
        assert k + ":" in text, k


def test_a_configured_offload_without_boto3_is_an_error_naming_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` meets without it
    found = problems({"backups": {"offload": {"url": "s3://bkt/p",
                                              "credentials": creds(tmp_path)}}})
    assert found == ["backups.offload.url: offload needs boto3: install the Debian package "
                     "python3-boto3"]
    parse_config({})  # without offload, boto3 is not needed


def test_a_credentials_file_others_can_read_or_missing_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    found = problems({"backups": {"offload": {"url": "s3://bkt/p",
                                              "credentials": creds(tmp_path, 0o644)}}})
    assert len(found) == 1 and "mode 0644 lets group or others read it" in found[0]
    found = problems({"backups": {"offload": {"url": "s3://bkt/p",
                                              "credentials": str(tmp_path / "none")}}})
    assert found[0].startswith("backups.offload.credentials:") and "no such file" in found[0]


def test_the_units_loaded_credential_is_checked_in_place_of_the_configured_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cred_dir = tmp_path / "creds"
    cred_dir.mkdir()
    (cred_dir / "offload-s3").write_text("[default]\naws_access_key_id = a\n"
                                         "aws_secret_access_key = b\n")
    (cred_dir / "offload-s3").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred_dir))
    cfg = parse_config({"backups": {"offload": {"url": "s3://bkt/p",
                                                "credentials": "/nonexistent/s3"}}})
    assert cfg.backups.offload.enabled
