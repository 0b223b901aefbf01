"""The backups target's side of offload: what is known to be in the bucket, and the client.

:class:`OffloadCache` remembers, per local file identity (device, inode, size, mtime, ctime),
the object key and SHA-256 of a copy that was uploaded *and verified*, in
``backup-offload.json`` in the state directory. It only saves work (``upload = "all"`` does
not hash every backup every hour, and ``backups list`` can say "uploaded" without the
network): before a local file is deleted, its remote copy is always verified again against
the service (size, SHA-256 in its metadata and the checksum the service stores).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from architect_cleanup.backup_verify import Identity, write_json_atomic
from architect_cleanup.config import OffloadConfig
from architect_cleanup.offload import Offload, Settings, load_credentials

log = logging.getLogger(__name__)

CACHE_FILE = "backup-offload.json"
CACHE_FORMAT = 1
CACHE_LIMIT = 100_000
_TMP_PREFIX, _TMP_SUFFIX = ".backup-offload.", ".tmp"


def make_offload(cfg: OffloadConfig) -> Offload:
    """An :class:`Offload` for ``[backups.offload]``; raises OffloadError (credentials, boto3)."""
    creds = load_credentials(cfg.credentials)
    return Offload(Settings(url=cfg.url, credentials=creds, endpoint=cfg.endpoint or None,
                            region=cfg.region or None, bandwidth=cfg.bandwidth))


class OffloadCache:
    """Verified uploads per local file identity (see the module doc)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, CACHE_FILE)
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        try:
            with open(self.path, "rb") as fh:
                doc = json.loads(fh.read())
            entries = doc.get("entries") if isinstance(doc, dict) else None
            if isinstance(entries, dict):
                self._entries = {k: v for k, v in entries.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("%s is unreadable (%s); uploads are checked again", self.path, exc)

    @staticmethod
    def _key(st: os.stat_result) -> str:
        return ":".join(map(str, Identity.of(st).as_list()))

    def lookup(self, st: os.stat_result, url: str) -> dict[str, Any] | None:
        """``{"key", "sha256", "at"}`` of this exact file's verified copy under *url*."""
        e = self._entries.get(self._key(st))
        return e if e is not None and e.get("url") == url else None

    def store(self, path: str, st: os.stat_result, url: str, key: str, sha256: str) -> None:
        self._entries[self._key(st)] = {"path": path, "url": url, "key": key,
                                        "sha256": sha256, "at": time.time()}
        self._dirty = True

    def forget(self, st: os.stat_result) -> None:
        if self._entries.pop(self._key(st), None) is not None:
            self._dirty = True

    def save(self) -> None:
        gone = [k for k, e in self._entries.items() if not _same_file(e.get("path"), k)]
        for k in gone:
            del self._entries[k]
        if len(self._entries) > CACHE_LIMIT:
            newest = sorted(self._entries.items(), key=lambda kv: float(kv[1].get("at", 0)),
                            reverse=True)[:CACHE_LIMIT]
            self._entries = dict(newest)
        if not (self._dirty or gone):
            return
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        write_json_atomic(self.directory, CACHE_FILE,
                          {"format": CACHE_FORMAT, "entries": self._entries},
                          _TMP_PREFIX, _TMP_SUFFIX)
        self._dirty = False


def _same_file(path: object, key: str) -> bool:
    try:
        st = os.stat(str(path), follow_symlinks=False)
    except (OSError, ValueError):
        return False
    return OffloadCache._key(st) == key
