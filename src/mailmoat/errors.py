"""The exception tree of mailmoat (layer L0, stdlib only).

::

    MailmoatError                      every error we raise on purpose
    ├── ConfigError                    bad configuration; names the offending key
    ├── ProtocolError                  a protocol engine refused something
    │   ├── LocalProtocolError         *we* misused an engine (a bug in the caller)
    │   └── RemoteProtocolError        the *peer* broke the protocol; carries the reply to send
    ├── LimitExceeded                  untrusted input crossed a named bound in limits.py
    ├── ParseError                     untrusted input could not be parsed (message, record, header)
    ├── FieldError                     a message field (web form, API) is refused; names it
    │   └── HeaderInjectionError       it tries to add header lines (CR/LF, encoded forms)
    ├── DNSError                       a DNS question could not be answered (see resolver/)
    │   ├── DNSTemporaryError          timeout, SERVFAIL, network: may succeed later (temperror)
    │   └── DNSPermanentError          malformed answer, loop, refused for good
    ├── SpoolError                     the durable spool could not store or read a message
    ├── StoreError                     the verdict/queue store failed
    └── TLSConfigError                 certificate/key missing, unreadable or mismatched

Rule (ARCHITECTURE.md rule 3): our misuse and the peer's misuse are different errors, and a
peer error carries what to answer. Authentication *outcomes* (SPF fail, DKIM permerror, ...)
are values, never exceptions.
"""

from __future__ import annotations

from typing import Any


class MailmoatError(Exception):
    """Base class of every error mailmoat raises on purpose."""


class ConfigError(MailmoatError):
    """Configuration is invalid. ``key`` names the offending setting (dotted path)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class ProtocolError(MailmoatError):
    """A protocol engine refused an action or an input."""


class LocalProtocolError(ProtocolError):
    """The caller (our own code) misused a protocol engine: a programming error."""


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol.

    ``reply`` is the protocol reply object (e.g. an SMTP ``Reply``) the engine wants sent to
    the peer; typed ``Any`` here because L0 knows no protocol.
    """

    def __init__(self, message: str, *, reply: Any = None) -> None:
        super().__init__(message)
        self.reply = reply


class LimitExceeded(MailmoatError):
    """Untrusted input crossed a bound named in :mod:`mailmoat.limits`."""

    def __init__(self, message: str, *, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class ParseError(MailmoatError):
    """Untrusted input could not be parsed."""


class FieldError(MailmoatError):
    """A field given to compose or submit a message is refused (web forms, the submission API).

    ``field`` names it as the caller wrote it (``"subject"``, ``"to[1]"``,
    ``"attachments[0].filename"``); ``reason`` says why in words a form developer can act on;
    ``code`` is the stable machine-readable kind (the JSON ``error`` of the HTTP API).
    """

    code: str = "invalid_field"

    def __init__(self, *, field: str, reason: str, code: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        if code is not None:
            self.code = code


class HeaderInjectionError(FieldError):
    """A field tries to add or split header lines: CR, LF, other line breaks or controls,
    encoded forms of them, or more than one address where one was expected."""

    code = "header_injection"


class DNSError(MailmoatError):
    """A DNS question could not be answered."""


class DNSTemporaryError(DNSError):
    """Timeout, SERVFAIL or network error: the answer may come later (a *temperror*)."""


class DNSPermanentError(DNSError):
    """The question can never be answered as asked (malformed name, CNAME loop, ...)."""


class SpoolError(MailmoatError):
    """The durable spool could not store or read a message."""


class StoreError(MailmoatError):
    """The verdict/queue store failed."""


class TLSConfigError(MailmoatError):
    """A certificate or key is missing, unreadable, or does not match."""
