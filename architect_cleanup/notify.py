"""sd_notify: live ``STATUS=`` progress for ``systemctl status``; a no-op outside systemd.

We call libsystemd's own ``sd_notify(3)`` through python3-systemd, which also handles abstract
sockets. Unlike python3-sdnotify it reports failures, which we log at debug level: progress is
a courtesy and must never fail a run. Without python3-systemd (a non-Debian Python) a few lines
of socket code do the same.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

def _load_sd_notify() -> Callable[[str], bool] | None:
    try:
        from systemd.daemon import notify  # noqa: PLC0415  (optional)
    except ImportError:  # a Python without Debian's python3-systemd
        return None
    return notify  # type: ignore[no-any-return]


def _fallback_notify(message: str, environ: Mapping[str, str]) -> bool:
    addr = environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode("utf-8", "replace"), addr)
    return True


class Notifier:
    """Sends sd_notify messages when ``$NOTIFY_SOCKET`` is set; does nothing otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.enabled = bool(self.environ.get("NOTIFY_SOCKET"))
        self.sent = 0

    def send(self, message: str) -> bool:
        if not self.enabled:
            return False
        try:
            sd_notify = _load_sd_notify() if self.environ is os.environ else None
            if sd_notify is not None:
                ok = bool(sd_notify(message))
            else:
                ok = _fallback_notify(message, self.environ)
        except OSError as exc:
            log.debug("sd_notify(%r) failed: %s", message, exc)
            return False
        self.sent += ok
        return ok

    def status(self, text: str) -> None:
        """``STATUS=<text>`` on one line."""
        self.send("STATUS=" + text.replace("\n", " "))
