"""``[notify]`` (who hears about what, SPEC section 11) and ``[history]`` (what is recorded)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from architect_cleanup.settings.problems import Problem, type_name
from architect_cleanup.settings.readers import (
    NAME_RX,
    Invalid,
    Reader,
    absolute,
    boolean,
    choice,
    duration,
    http_url,
    strings,
    text,
)
from architect_cleanup.settings.tables import Table, key

#: The events a channel can subscribe to with ``on = [...]``.
NOTIFY_EVENTS = ("failure", "warning", "success", "digest")
DEFAULT_ON = ("failure", "warning")
_SMTP_RX = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_ADDRESS_RX = re.compile(r"[^@\s<>,]+@[^@\s<>,]+")


def _on(v: Any) -> tuple[str, ...]:
    events: tuple[str, ...] = strings()(v)
    bad = [e for e in events if e not in NOTIFY_EVENTS]
    if bad:
        raise Invalid(f"unknown event {', '.join(map(repr, bad))} "
                      f"(choose from {', '.join(NOTIFY_EVENTS)})")
    return tuple(dict.fromkeys(events))


def _smtp(v: str) -> str | None:
    m = _SMTP_RX.fullmatch(v)
    if not m or not 0 < int(m.group(2)) < 65536:
        return f"{v!r}: must be \"host:port\" (e.g. \"mail.example.org:587\")"
    return None


def _address(v: str) -> str | None:
    return None if _ADDRESS_RX.fullmatch(v) else f"{v!r} is not an e-mail address"


@dataclass(frozen=True)
class EmailChannel:
    """One ``[[notify.email]]``: through ``sendmail -oi -t`` unless ``smtp`` is set."""

    name: str
    to: tuple[str, ...]
    sender: str
    on: tuple[str, ...] = DEFAULT_ON
    smtp: str = ""
    starttls: bool = True
    credentials: str = ""
    tls_ca: str = ""
    sendmail: str = "/usr/sbin/sendmail"

    kind: ClassVar[str] = "email"
    #: How each key of the table is read, and the ones it must have.
    KEYS: ClassVar[dict[str, Reader]] = {
        "name": text(), "to": strings(each=_address), "from": text(_address), "on": _on,
        "smtp": text(_smtp), "starttls": boolean, "credentials": text(absolute),
        "tls_ca": text(absolute), "sendmail": text(absolute)}
    REQUIRED: ClassVar[tuple[str, ...]] = ("to", "from")

    def to_config(self) -> dict[str, Any]:
        out = {"name": self.name, "to": list(self.to), "from": self.sender,
               "on": list(self.on), "starttls": self.starttls, "sendmail": self.sendmail}
        out |= {k: v for k, v in (("smtp", self.smtp), ("credentials", self.credentials),
                                  ("tls_ca", self.tls_ca)) if v}
        return out


@dataclass(frozen=True)
class WebhookChannel:
    """One ``[[notify.webhook]]``: a JSON POST signed per the Standard Webhooks spec."""

    name: str
    url: str
    secret: str
    on: tuple[str, ...] = DEFAULT_ON
    tls_ca: str = ""

    kind: ClassVar[str] = "webhook"
    KEYS: ClassVar[dict[str, Reader]] = {
        "name": text(), "url": text(http_url()), "secret": text(absolute), "on": _on,
        "tls_ca": text(absolute)}
    REQUIRED: ClassVar[tuple[str, ...]] = ("url", "secret")

    def to_config(self) -> dict[str, Any]:
        out = {"name": self.name, "url": self.url, "secret": self.secret, "on": list(self.on)}
        return out | ({"tls_ca": self.tls_ca} if self.tls_ca else {})


@dataclass(frozen=True)
class AppriseChannel:
    """One ``[[notify.apprise]]``: Debian's apprise (a Suggests) and the services it knows."""

    name: str
    urls: tuple[str, ...]
    on: tuple[str, ...] = DEFAULT_ON

    kind: ClassVar[str] = "apprise"
    KEYS: ClassVar[dict[str, Reader]] = {"name": text(), "urls": strings(what="URL"), "on": _on}
    REQUIRED: ClassVar[tuple[str, ...]] = ("urls",)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "urls": list(self.urls), "on": list(self.on)}


Channel = EmailChannel | WebhookChannel | AppriseChannel


def _apprise_installed() -> bool:
    import importlib.util  # noqa: PLC0415  (only when [[notify.apprise]] is configured)
    return importlib.util.find_spec("apprise") is not None


def _channel(cls: type[Channel], i: int, entry: dict[str, Any], found: list[Problem]
             ) -> Channel | None:
    """Entry *i* of a ``[[notify.<kind>]]`` array; None when *found* got a problem."""
    t = Table(entry, f"[{i}]", found)
    values = t.read(cls.KEYS)
    t.finish()
    t.require(cls.REQUIRED, "is required")
    name = values.pop("name", f"{cls.kind}{i + 1}")
    if not NAME_RX.fullmatch(name):
        t.error("name", f"{name!r} is not a valid channel name")
    if cls is AppriseChannel and not _apprise_installed():
        t.error("", "needs Debian's apprise package (apt install apprise)")
    if cls is EmailChannel and "from" in values:
        values["sender"] = values.pop("from")
    return None if found else cls(name=name, **values)


def _channels(cls: type[Channel]) -> Reader:
    """A ``[[notify.<kind>]]`` array of tables: every problem of every entry at once."""
    def read(v: Any) -> tuple[Any, ...]:
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
            raise Invalid(f"must be an array of tables ([[notify.{cls.kind}]]), "
                          f"not {type_name(v)}")
        problems: list[str] = []
        out = []
        for i, entry in enumerate(v):
            found: list[Problem] = []
            channel = _channel(cls, i, entry, found)
            problems.extend(str(p) for p in found)
            if channel is not None:
                out.append(channel)
        if problems:
            raise Invalid(*problems)
        return tuple(out)
    return read


@dataclass(frozen=True)
class NotifyConfig:
    email: tuple[EmailChannel, ...] = key(_channels(EmailChannel), (),
                                          "[[notify.email]]: to, from, on, smtp, starttls, "
                                          "credentials")
    webhook: tuple[WebhookChannel, ...] = key(_channels(WebhookChannel), (),
                                              "[[notify.webhook]]: url, secret, on")
    apprise: tuple[AppriseChannel, ...] = key(_channels(AppriseChannel), (),
                                              "[[notify.apprise]]: urls, on")
    digest: str = key(text(choice("weekly", "off")), "off",
                      "\"weekly\": a digest event once a week")
    dry_run_warning: timedelta = key(duration(), timedelta(days=7),
                                     "warn when the configuration still dry-runs this long")
    timeout: timedelta = key(duration(), timedelta(seconds=10), "per delivery attempt")
    max_time: timedelta = key(duration(), timedelta(seconds=60),
                              "for all deliveries of one run (the rest wait in the outbox)")

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (*self.email, *self.webhook, *self.apprise)


@dataclass(frozen=True)
class HistoryConfig:
    enabled: bool = key(boolean, True, "record every run, its removed items and space "
                        "figures in the history database, and write the metrics file")
    items_max_age: timedelta = key(duration(), timedelta(days=90),
                                   "removed items recorded longer ago are pruned")
    runs_max_age: timedelta = key(duration(), timedelta(days=730),
                                  "runs (their figures and samples) older than this are pruned")
