"""Shared pieces of the notification tests: a secret file, a config with channels, a run."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from notify_receivers import SECRET

from architect_cleanup import CleanupWorker
from architect_cleanup.alerts.outbox import OUTBOX
from architect_cleanup.config import Config
from architect_cleanup.journal import MESSAGE_IDS
from architect_cleanup.state import StateStore, state_dir
from architect_cleanup.stats import CleanupStats

from conftest import NOW, make_config


def secret_file(tmp_path: Path, value: str = SECRET, name: str = "webhook.secret",
                mode: int = 0o600) -> Path:
    p = tmp_path / "credentials" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(value + "\n")
    p.chmod(mode)
    return p


def webhook_config(root: Path, tmp: Path | None, url: str, secret: Path, **extra: Any
                   ) -> Config:
    hook: dict[str, Any] = {"url": url, "secret": str(secret)}
    hook |= extra.pop("hook", {})
    notify: dict[str, Any] = {"webhook": [hook], "timeout": "2s", "max_time": "20s"}
    notify |= extra.pop("notify", {})
    return make_config(root, tmp, notify=notify, **extra)


def run(cfg: Config, now: datetime = NOW, **kw: Any) -> CleanupStats:
    return CleanupWorker(config=cfg, now=now, **kw).run_cleanup()


def outbox_entries() -> list[dict[str, Any]]:
    d = Path(state_dir()) / OUTBOX
    if not d.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(d.iterdir())
            if p.suffix == ".json" and not p.name.startswith(".")]


def last_run() -> dict[str, Any]:
    doc = StateStore().load()["last_run"]
    assert isinstance(doc, dict)
    return doc


def journal_kinds(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The notify_* kinds logged, in order (each attempt is one entry)."""
    by_id = {u.hex: k for k, u in MESSAGE_IDS.items()}
    return [by_id[r.MESSAGE_ID] for r in caplog.records
            if getattr(r, "MESSAGE_ID", None) in by_id
            and by_id[r.MESSAGE_ID].startswith("notify_")]


def no_secrets_in(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    for s in secrets:
        assert s not in text


__all__ = ["journal_kinds", "last_run", "logging", "no_secrets_in", "os", "outbox_entries",
           "run", "secret_file", "webhook_config"]
