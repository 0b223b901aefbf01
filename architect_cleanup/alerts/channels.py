"""The channels: one narrow ``send(channel, message, timeout)`` per kind.

* e-mail: ``sendmail -oi -t`` (the Debian convention: whatever MTA the host has, as
  unattended-upgrades does) when ``smtp`` is unset, else smtplib with STARTTLS and an optional
  login from a ``credentials`` file (``user:password``);
* webhook: an HTTP POST of the JSON body, signed per Standard Webhooks
  (:mod:`~architect_cleanup.alerts.signing`);
* apprise: Debian's apprise, when installed, with the title and text.

A failed attempt raises :class:`DeliveryError`: ``gone`` for a webhook's ``410 Gone`` (the
channel is disabled until its configuration changes), ``retry`` False for a problem a retry
cannot fix (a bad secret).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from architect_cleanup.alerts import signing
from architect_cleanup.alerts.secrets import SecretError
from architect_cleanup.config import AppriseChannel, Channel, EmailChannel, WebhookChannel


@dataclass(frozen=True)
class Message:
    """One notification: the same for every channel, each renders what it needs."""

    id: str  #: ``msg_<hex>``: the webhook-id, kept across retries
    event: str
    title: str
    text: str
    body: dict[str, Any]

    def payload(self) -> bytes:
        """The webhook body (compact JSON, UTF-8)."""
        return json.dumps(self.body, separators=(",", ":"), sort_keys=True).encode()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "title": self.title, "text": self.text,
                "body": self.body}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Message:
        return cls(str(doc["id"]), str(doc["event"]), str(doc["title"]), str(doc["text"]),
                   dict(doc["body"]))


class DeliveryError(Exception):
    def __init__(self, message: str, *, retry: bool = True, gone: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.gone = gone


def send(channel: Channel, message: Message, timeout: float) -> str:
    """Deliver *message* through *channel*; what the receiver answered, for the journal."""
    try:
        if isinstance(channel, EmailChannel | WebhookChannel):
            # loaded when a message goes out: smtplib, ssl, urllib and email (libssl among
            # them) would cost every run about 8 MB of its memory goal, and most send nothing
            from architect_cleanup.alerts import transports  # noqa: PLC0415

            if isinstance(channel, EmailChannel):
                return transports.email(channel, message, timeout)
            return transports.webhook(channel, message, timeout)
        return _apprise(channel, message)
    except SecretError as exc:
        raise DeliveryError(str(exc), retry=False) from None
    except signing.BadSecret as exc:
        raise DeliveryError(f"{getattr(channel, 'secret', '')}: {exc}", retry=False) from None


# --- apprise ----------------------------------------------------------------------------------


def _apprise(channel: AppriseChannel, message: Message) -> str:
    try:
        import apprise  # type: ignore[import-not-found]  # noqa: PLC0415  (a Suggests)
    except ImportError:
        raise DeliveryError("Debian's apprise package is not installed", retry=False) from None
    app = apprise.Apprise()
    for url in channel.urls:
        if not app.add(url):
            raise DeliveryError("apprise refused one of its urls", retry=False)
    if not app.notify(title=message.title, body=message.text):
        raise DeliveryError("apprise could not notify every service")
    return f"sent to {len(channel.urls)} apprise service(s)"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
