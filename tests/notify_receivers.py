"""Real receivers on loopback for the notification tests.

* :class:`WebhookReceiver`: an HTTP server that verifies every delivery with the independent
  ``standardwebhooks`` package (PyPI), refuses replays (a webhook-id seen before) and stale or
  future timestamps, and can be told to answer 500 or 410, or to hang past the client's
  timeout.
* :func:`smtp_server`: Debian's aiosmtpd, plain or with STARTTLS (required) and a login,
  with a self-signed certificate made by ``openssl`` for the test.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

#: a valid Standard Webhooks secret (24 random-looking bytes, base64)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]


@dataclass
class WebhookReceiver:
    secret: str = SECRET
    #: "ok", "500", "410" or "hang"
    mode: str = "ok"
    hang_s: float = 5.0
    accepted: list[Delivery] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    url: str = ""
    #: called with each verified payload before the answer (what the sender has done by then)
    on_receive: Any = None

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        if self.mode == "hang":
            time.sleep(self.hang_s)
            return 200
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.rejected.append(str(exc))
            return 401
        msg_id = headers.get("webhook-id", "")
        if self.on_receive is not None:
            self.on_receive(payload)
        if self.mode == "500":
            return 500
        if self.mode == "410":
            return 410
        if msg_id in self.seen_ids:
            self.rejected.append(f"replay of {msg_id}")
            return 409
        self.seen_ids.add(msg_id)
        self.accepted.append(Delivery(headers, body, payload))
        return 200


@contextmanager
def webhook_receiver(**kw: Any) -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver(**kw)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = rec.handle(headers, body)
            rec.answered.append(status)
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (the "hang" mode)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/cleanup"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def post(url: str, headers: dict[str, str], body: bytes) -> int:
    """A raw POST (for replay and forgery checks against the receiver itself)."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- SMTP ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, made by openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)

    def wait(self, n: int = 1, timeout: float = 15.0) -> list[Message]:
        end = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.05)
        return self.messages


@contextmanager
def smtp_server(*, tls: tuple[Path, Path] | None = None,
                login: tuple[str, str] | None = None) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1; with *tls* (cert, key) STARTTLS is required, and with *login*
    AUTH too (over TLS only)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            box.tls.append(session.ssl is not None)
            box.messages.append(message_from_bytes(envelope.original_content
                                                   or envelope.content))
            return "250 OK"

    def authenticator(_server: Any, _session: Any, _envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        if (login is not None and isinstance(data, LoginPassword)
                and (data.login.decode(), data.password.decode()) == login):
            box.logins.append(data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    kw: dict[str, Any] = {}
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        kw.update(tls_context=ctx, require_starttls=True)
    if login is not None:
        kw.update(authenticator=authenticator, auth_require_tls=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port,
                            server_hostname="localhost", ready_timeout=15, **kw)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def payload_of(delivery: Delivery) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(delivery.body)
    return out
