"""sd_notify: live ``STATUS=`` progress for ``systemctl status``; a no-op outside systemd.

We call libsystemd's own ``sd_notify(3)`` through python3-systemd (``systemd.daemon.notify``),
which speaks every address form systemd may hand us (path, abstract, vsock) and reports
failures as OSError. python3-sdnotify was not used: it hides every error behind a bare
``except``, so a wrong socket would fail silently. A failure here is logged at debug level and
never fails a run: progress is a courtesy. Without python3-systemd (a non-Debian Python) a few
lines of socket code do the same for path and abstract sockets.

``STATUS=`` is cleared by systemd when a oneshot service ends; what stays visible after a run
is the journal's last line, the one-line summary (see worker.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _load_sd_notify() -> Callable[[str], bool] | None:
    try:
        from systemd.daemon import notify  # noqa: PLC0415  (optional: python3-systemd)
    except ImportError:  # pragma: no cover - depends on the interpreter
        return None
    sd_notify: Callable[[str], bool] = notify
    return sd_notify


def socket_notify(message: str, address: str) -> bool:
    """Send one datagram to *address* (a path, or ``@name`` for an abstract socket)."""
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode("utf-8", "replace"), address)
    return True


class Notifier:
    """Sends sd_notify messages when ``$NOTIFY_SOCKET`` is set; does nothing otherwise.

    With the process environment, libsystemd's sd_notify sends (it reads ``$NOTIFY_SOCKET``
    itself); an explicit *environ* (tests, or an embedding program) is served by
    :func:`socket_notify`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.address = self.environ.get("NOTIFY_SOCKET", "")
        self.enabled = bool(self.address)
        self._sd_notify = _load_sd_notify() if self.environ is os.environ else None
        self.sent = 0
        self.failed = 0

    def send(self, message: str) -> bool:
        """Send *message* (``KEY=value`` lines); False when not under systemd or it failed."""
        if not self.enabled:
            return False
        try:
            if self._sd_notify is not None:
                ok = bool(self._sd_notify(message))
            else:
                ok = socket_notify(message, self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed <= 3:
                log.debug("sd_notify(%r) to %s failed: %s", message, self.address, exc)
            return False
        self.sent += ok
        return ok

    def status(self, text: str) -> None:
        """``STATUS=<text>`` on one line (the worker's progress callback)."""
        self.send("STATUS=" + " ".join(text.splitlines()))
