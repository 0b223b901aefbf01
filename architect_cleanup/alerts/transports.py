"""The e-mail and webhook transports of :mod:`~architect_cleanup.alerts.channels`, loaded
only when a message goes out (smtplib, ssl, urllib and email are a run's largest imports).

* e-mail: ``sendmail -oi -t`` when ``smtp`` is unset, else smtplib with STARTTLS and an
  optional login from a ``credentials`` file (``user:password``);
* webhook: an HTTP POST of the JSON body, signed per Standard Webhooks
  (:mod:`~architect_cleanup.alerts.signing`); a redirect is an answer, never followed.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from architect_cleanup.alerts import signing
from architect_cleanup.alerts.channels import DeliveryError, Message, _text
from architect_cleanup.alerts.secrets import read_secret
from architect_cleanup.config import EmailChannel, WebhookChannel

USER_AGENT = "architect-cleanup-notify"


# --- e-mail -----------------------------------------------------------------------------------


def email_message(channel: EmailChannel, message: Message) -> EmailMessage:
    host = str(message.body.get("host", socket.gethostname()))
    mail = EmailMessage()
    mail["Subject"] = f"[architect-cleanup] {host}: {message.title}"
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(idstring=message.id, domain=host or None)
    mail["X-Architect-Cleanup-Event"] = message.event
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.text + "\n")
    return mail


def email(channel: EmailChannel, message: Message, timeout: float) -> str:
    mail = email_message(channel, message)
    if not channel.smtp:
        return _sendmail(channel, mail, timeout)
    host, _, port = channel.smtp.rpartition(":")
    host = host.strip("[]")
    try:
        with smtplib.SMTP(host, int(port), timeout=timeout) as smtp:
            smtp.ehlo()
            if channel.starttls:
                ctx = ssl.create_default_context(cafile=channel.tls_ca or None)
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if channel.credentials:
                user, _, password = read_secret(channel.credentials).partition(":")
                smtp.login(user, password)
            refused = smtp.send_message(mail)
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        raise DeliveryError(f"{channel.smtp}: {exc.smtp_code} {_text(exc.smtp_error)}",
                            retry=not permanent) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{channel.smtp}: {exc}") from None
    if refused:
        raise DeliveryError(f"{channel.smtp}: refused {', '.join(refused)}", retry=False)
    return f"accepted by {channel.smtp}"


def _sendmail(channel: EmailChannel, mail: EmailMessage, timeout: float) -> str:
    try:
        proc = subprocess.run([channel.sendmail, "-oi", "-t"], input=mail.as_bytes(),
                              capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise DeliveryError(f"{channel.sendmail}: not installed (install an MTA such as "
                            "postfix, exim4 or msmtp-mta, or set smtp)") from None
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"{channel.sendmail}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise DeliveryError(f"{channel.sendmail}: {exc.strerror}") from None
    if proc.returncode != 0:
        why = _text(proc.stderr).strip().splitlines()
        raise DeliveryError(f"{channel.sendmail} exited with {proc.returncode}"
                            + (f": {why[-1]}" if why else ""))
    return f"handed to {channel.sendmail}"


# --- webhooks ---------------------------------------------------------------------------------


def webhook(channel: WebhookChannel, message: Message, timeout: float,
             now: float | None = None) -> str:
    body = message.payload()
    stamp = int(time.time() if now is None else now)
    secret = read_secret(channel.secret)
    # the URL was checked to be http(s):// when the configuration was read
    req = urllib.request.Request(channel.url, data=body, method="POST", headers={  # noqa: S310
        "content-type": "application/json", "user-agent": USER_AGENT,
        **signing.headers(secret, message.id, stamp, body)})
    ctx = ssl.create_default_context(cafile=channel.tls_ca or None)
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
        if status == 410:
            raise DeliveryError("410 Gone: disabled until its configuration changes",
                                retry=False, gone=True) from None
        raise DeliveryError(f"HTTP {status}", retry=status in (408, 425, 429)
                            or status >= 500) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{_host(channel.url)}: {reason}") from None
    return f"HTTP {status}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (3xx fails the attempt): the signed body is not re-posted."""

    def redirect_request(self, *_args: Any, **_kw: Any) -> None:
        return None


def _host(url: str) -> str:
    return url.split("/")[2] if url.count("/") >= 2 else url
