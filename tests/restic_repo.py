"""A throwaway restic repository whose snapshots have the times a test chooses.

``restic backup --time`` makes one snapshot in about a second (most of it the password's
scrypt), far too slow for the thousands of backups of the retention table, and its ``--time``
cannot name one side of a DST fold. So the repository is made by ``restic init``, and snapshot
files are written the way restic writes them (repository format 1, see restic's design
document): the JSON snapshot, encrypted with the master key as AES-256-CTR and authenticated
with Poly1305-AES, stored under the SHA-256 of the file. restic checks both the MAC and the hash
when it reads a snapshot, so a mistake here fails loudly in restic, never silently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

PASSWORD = "retention-test"


def available() -> str | None:
    """Why the cross-check cannot run here, or None when it can."""
    if shutil.which("restic") is None:
        return "restic is not installed (apt-get install restic)"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return "python3-cryptography is not installed"
    return None


@dataclass
class Repo:
    path: Path
    cache: Path
    _encrypt: bytes = b""
    _mac_k: bytes = b""
    _mac_r: bytes = b""

    def env(self, tz: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": tz,
                "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(self.path),
                "RESTIC_CACHE_DIR": str(self.cache), "HOME": str(self.cache)}

    @classmethod
    def create(cls, where: Path) -> Repo:
        repo = cls(where / "repo", where / "cache")
        subprocess.run(["restic", "init", "--quiet", "--repository-version", "1"],
                       env=repo.env("UTC"), check=True, capture_output=True)
        repo._load_master_key()
        return repo

    def _load_master_key(self) -> None:
        (key_file,) = (self.path / "keys").iterdir()
        key = json.loads(key_file.read_text())
        user = hashlib.scrypt(PASSWORD.encode(), salt=base64.b64decode(key["salt"]),
                              n=key["N"], r=key["r"], p=key["p"], dklen=64,
                              maxmem=1 << 30)
        master = json.loads(_open(user[:32], user[32:48], user[48:64],
                                  base64.b64decode(key["data"])))
        self._encrypt = base64.b64decode(master["encrypt"])
        self._mac_k = base64.b64decode(master["mac"]["k"])
        self._mac_r = base64.b64decode(master["mac"]["r"])

    def add_snapshot(self, when: datetime, host: str) -> None:
        """One snapshot at *when* (aware; restic keeps its UTC offset) for *host*."""
        doc = {"time": when.isoformat(), "tree": "0" * 64, "paths": ["/srv/backups"],
               "hostname": host, "username": "test"}
        blob = _seal(self._encrypt, self._mac_k, self._mac_r, json.dumps(doc).encode())
        (self.path / "snapshots" / hashlib.sha256(blob).hexdigest()).write_bytes(blob)

    def forget(self, host: str, flags: list[str], tz: str) -> list[dict[str, Any]]:
        """``restic forget --dry-run --json`` for *host*'s snapshots, read in zone *tz*."""
        out = subprocess.run(
            ["restic", "--no-lock", "forget", "--dry-run", "--json", "--host", host, *flags],
            env=self.env(tz), check=True, capture_output=True, text=True)
        groups: list[dict[str, Any]] = json.loads(out.stdout)
        return groups


def _poly1305_aes(k: bytes, r: bytes, nonce: bytes, msg: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.poly1305 import Poly1305
    aes = Cipher(algorithms.AES(k), modes.ECB()).encryptor()  # one block, as restic does
    return Poly1305.generate_tag(r + aes.update(nonce) + aes.finalize(), msg)


def _open(enc: bytes, k: bytes, r: bytes, blob: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    iv, ct, tag = blob[:16], blob[16:-16], blob[-16:]
    if _poly1305_aes(k, r, iv, ct) != tag:
        raise ValueError("restic key: wrong password or format")
    dec = Cipher(algorithms.AES(enc), modes.CTR(iv)).decryptor()
    return dec.update(ct) + dec.finalize()


def _seal(enc: bytes, k: bytes, r: bytes, plain: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    iv = os.urandom(16)
    e = Cipher(algorithms.AES(enc), modes.CTR(iv)).encryptor()
    ct = e.update(plain) + e.finalize()
    return iv + ct + _poly1305_aes(k, r, iv, ct)
