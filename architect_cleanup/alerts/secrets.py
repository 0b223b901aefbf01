"""Secrets are paths: read at the moment of use, never logged, never kept in the config.

A configured path (``secret = "/etc/architect-cleanup/credentials/webhook.secret"``) is read
from ``$CREDENTIALS_DIRECTORY/<its file name>`` when systemd passed it with
``LoadCredential=<file name>:<path>``, else from the path itself, which must then be a regular
file that only its owner (root, or the user running the command) can read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping


class SecretError(Exception):
    """A secret that cannot be used; the message names the file, never its content."""


def read_secret(path: str, environ: Mapping[str, str] | None = None) -> str:
    """The secret stored at *path* (one line, surrounding whitespace removed)."""
    environ = os.environ if environ is None else environ
    creds = environ.get("CREDENTIALS_DIRECTORY", "")
    if creds:
        passed = os.path.join(creds, os.path.basename(path))
        if os.path.isfile(passed):
            return _read(passed)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise SecretError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise SecretError(f"{path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}"
                              "); chmod 600 it")
        if st.st_uid not in (0, os.geteuid()):
            raise SecretError(f"{path}: owned by uid {st.st_uid}, not by root")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(65536)
    finally:
        os.close(fd)
    return _decode(path, data)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return _decode(path, fh.read(65536))
    except OSError as exc:
        raise SecretError(f"{path}: cannot read: {exc.strerror}") from None


def _decode(path: str, data: bytes) -> str:
    try:
        value = data.decode().strip()
    except UnicodeDecodeError:
        raise SecretError(f"{path}: not UTF-8 text") from None
    if not value:
        raise SecretError(f"{path}: empty")
    return value
