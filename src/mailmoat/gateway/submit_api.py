"""The safe submission API for web forms (layer L4): fields in, a durably spooled message out.

:func:`submit` (or :meth:`Submitter.submit`) validates the fields, builds the message with
:func:`mailmoat.message.compose.compose` (which refuses every header-injection attempt with a
:class:`~mailmoat.errors.HeaderInjectionError` naming the field), DKIM-signs it when a key
for the From domain is configured (RFC 6376, :func:`mailmoat.auth.dkim.sign`), and stores it
in the spool (:meth:`mailmoat.spool.Spool.store`: fsync before the ID is returned). Delivery
is the outbound queue's job.

The HTTP side (web/submit.py) adds what a network endpoint needs and is built from the pieces
here: :func:`fields_from_json` (the JSON body → :class:`MessageFields`, every error naming
its field), :class:`TokenAuth` (bearer tokens compared in constant time) and
:class:`SubmitRateLimiter` (token buckets per API token and per client IP, injected clock).

SECURITY: callers of the Python API are trusted code, but the *fields* they pass are not
(a visitor typed them); callers of the HTTP API are untrusted until their token is checked.
Trusted: the configuration (tokens, DKIM keys, allowed From domains). Bounded: the JSON body
(``limits.SUBMIT_HTTP_BODY_MAX``, checked by the web layer before parsing), every field
(``limits.SUBMIT_*`` in compose), the message (``max_message_size``), requests per token and
per IP. Refused: unknown JSON keys, duplicate JSON keys, wrong types, invalid base64, a From
domain not in ``allowed_from_domains`` (a form must not send as anyone: put the visitor's
address in Reply-To), and everything compose refuses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import idna

from mailmoat import limits
from mailmoat.auth.dkim import PrivateKey, load_private_key, sign
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import ConfigError, FieldError, MailmoatError
from mailmoat.gateway.users import TokenBucket, ip_key
from mailmoat.message.compose import (
    Attachment,
    ComposedMessage,
    MessageFields,
    compose,
    parse_mailbox,
)
from mailmoat.spool import Envelope, Recipient, Spool, SpoolID

if TYPE_CHECKING:
    from mailmoat.gateway.config import Config

__all__ = [
    "DKIMKey",
    "SubmitPolicy",
    "SubmitRateLimiter",
    "SubmitResult",
    "Submitter",
    "TokenAuth",
    "fields_from_json",
    "submit",
    "submitter_from_config",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DKIMKey:
    """A signing key: mail From ``domain`` or a subdomain is signed ``d=domain; s=selector``."""

    domain: str
    selector: str
    key: PrivateKey


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitPolicy:
    """What the operator allows. ``allowed_from_domains=None`` allows any From domain
    (trusted Python callers only; the HTTP endpoint always has a list)."""

    allowed_from_domains: tuple[str, ...] | None = None
    envelope_from: str | None = None
    max_message_size: int = limits.SUBMIT_MAX_MESSAGE_SIZE
    dkim_keys: tuple[DKIMKey, ...] = ()
    message_id_domain: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitResult:
    """A stored message: its spool ID, Message-ID, envelope recipients and DKIM ``d=``."""

    id: SpoolID
    message_id: str
    recipients: tuple[str, ...]
    signed_by: str | None = None


def _dkim_key_for(domain: str, keys: Sequence[DKIMKey]) -> DKIMKey | None:
    """The key whose domain is ``domain`` or its closest parent (RFC 7489 §3.1.1 relaxed
    alignment: the organisational domain's key aligns with a subdomain's From)."""
    best: DKIMKey | None = None
    for key in keys:
        d = key.domain.lower().rstrip(".")
        if (domain == d or domain.endswith("." + d)) and (
            best is None or len(d) > len(best.domain)
        ):
            best = key
    return best


class Submitter:
    """Compose, sign and spool messages for one policy, clock and randomness."""

    def __init__(
        self,
        *,
        spool: Spool,
        policy: SubmitPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        randbytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.spool = spool
        self.policy = policy or SubmitPolicy()
        self.clock = clock
        self.randbytes = randbytes
        if self.policy.envelope_from is not None:
            try:
                parse_mailbox(self.policy.envelope_from, field="envelope_from")
            except FieldError as exc:
                raise ConfigError(exc.reason, key="submission_api.envelope_from") from None

    async def submit(
        self,
        fields: MessageFields,
        *,
        client_ip: str | None = None,
        auth_user: str | None = None,
    ) -> SubmitResult:
        """Validate, build, sign and store; return once the message is durable.

        Raises :class:`~mailmoat.errors.FieldError` (its subclass ``HeaderInjectionError``
        for injection attempts) naming the field, :class:`~mailmoat.errors.LimitExceeded`
        for an oversized message, :class:`~mailmoat.errors.SpoolError` if it cannot be
        stored. Nothing reaches the spool unless every check passed.
        """
        # ARCHITECTURE.md rule 14: building (base64 of attachments) and signing a message of
        # up to max_message_size octets is CPU work, done in a worker thread.
        data, composed, signed_by = await asyncio.to_thread(self._build, fields)
        envelope = Envelope(
            mail_from=self.policy.envelope_from or composed.mail_from,
            rcpts=tuple(Recipient(address=r) for r in composed.recipients),
            received_at=self.clock.now(),
            client_ip=client_ip,
            auth_user=auth_user,
            smtputf8=composed.smtputf8,
            body="8BITMIME" if composed.smtputf8 else None,
        )
        spool_id = await self.spool.store(envelope, data)
        return SubmitResult(id=spool_id, message_id=composed.message_id,
                            recipients=composed.recipients, signed_by=signed_by)

    def _build(self, fields: MessageFields) -> tuple[bytes, ComposedMessage, str | None]:
        """Compose, check the From domain, DKIM-sign: the message octets to spool."""
        policy = self.policy
        composed = compose(fields, clock=self.clock, randbytes=self.randbytes,
                           message_id_domain=policy.message_id_domain,
                           max_size=policy.max_message_size)
        from_domain = composed.mail_from.rpartition("@")[2].lower()
        if not from_domain.isascii():  # a UTF-8 local part keeps U-labels (RFC 6531)
            from_domain = idna.encode(from_domain).decode("ascii")
        if policy.allowed_from_domains is not None and from_domain not in {
            d.lower() for d in policy.allowed_from_domains
        }:
            raise FieldError(field="from", code="from_not_allowed",
                             reason=f"this API may not send From {from_domain!r}; use an "
                             "allowed domain and put the visitor's address in reply_to")
        data = composed.data
        signed_by = None
        key = _dkim_key_for(from_domain, policy.dkim_keys)
        if key is not None:
            # RFC 6376 §5: sign the message as it will be sent; the field goes on top.
            data = sign(data, key.domain, key.selector, key.key,
                        timestamp=int(self.clock.now())) + data
            signed_by = key.domain
        return data, composed, signed_by


async def submit(
    fields: MessageFields,
    *,
    spool: Spool,
    policy: SubmitPolicy | None = None,
    clock: Clock = SYSTEM_CLOCK,
    randbytes: Callable[[int], bytes] = secrets.token_bytes,
    client_ip: str | None = None,
    auth_user: str | None = None,
) -> SpoolID:
    """Validate, build, (DKIM-sign) and durably spool one message; return its queue ID.

    The one-call form of :meth:`Submitter.submit` (see there for the errors).
    """
    submitter = Submitter(spool=spool, policy=policy, clock=clock, randbytes=randbytes)
    result = await submitter.submit(fields, client_ip=client_ip, auth_user=auth_user)
    return result.id


# --- JSON body -> fields -------------------------------------------------------------------

_JSON_KEYS: Final = frozenset(
    {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments",
     "headers"}
)
_ATTACHMENT_KEYS: Final = frozenset({"filename", "content_type", "content"})


def _str_or_none(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise FieldError(field=key, reason="must be a string", code="invalid_type")
    return value


def _addresses(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise FieldError(field=key, reason="must be an address or a list of addresses",
                         code="invalid_type")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError(field=f"{key}[{i}]", reason="must be a string",
                             code="invalid_type")
    return tuple(value)


def fields_from_json(data: object) -> MessageFields:
    """The fields of a decoded JSON body::

        {"from": "Shop <shop@example.org>", "to": ["a@example.net"], "cc": [...],
         "bcc": [...], "reply_to": "Visitor <v@example.com>", "subject": "...",
         "text": "...", "html": "...",
         "attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                          "content": "<base64>"}],
         "headers": {"X-Form": "contact"}}

    Raises :class:`FieldError` naming the key for unknown keys, wrong types and bad base64.
    """
    if not isinstance(data, dict):
        raise FieldError(field="body", reason="must be a JSON object", code="invalid_type")
    for key in data:
        if key not in _JSON_KEYS:
            raise FieldError(field=str(key)[:64], code="unknown_field",
                             reason=f"is not a field; known: {', '.join(sorted(_JSON_KEYS))}")
    sender = data.get("from")
    if not isinstance(sender, str):
        raise FieldError(field="from", reason="is required (a string)", code="missing")
    attachments: list[Attachment] = []
    raw_attachments = data.get("attachments") or []
    if not isinstance(raw_attachments, list):
        raise FieldError(field="attachments", reason="must be a list", code="invalid_type")
    if len(raw_attachments) > limits.SUBMIT_MAX_ATTACHMENTS:
        raise FieldError(field="attachments", code="too_many",
                         reason=f"more than {limits.SUBMIT_MAX_ATTACHMENTS} attachments")
    for i, item in enumerate(raw_attachments):
        where = f"attachments[{i}]"
        if not isinstance(item, dict):
            raise FieldError(field=where, reason="must be an object", code="invalid_type")
        for key in item:
            if key not in _ATTACHMENT_KEYS:
                raise FieldError(field=f"{where}.{str(key)[:64]}", code="unknown_field",
                                 reason="is not an attachment field; known: "
                                 + ", ".join(sorted(_ATTACHMENT_KEYS)))
        filename = item.get("filename")
        content_type = item.get("content_type", "application/octet-stream")
        content = item.get("content")
        for key, value in (("filename", filename), ("content_type", content_type),
                           ("content", content)):
            if not isinstance(value, str):
                raise FieldError(field=f"{where}.{key}", reason="is required (a string)",
                                 code="missing" if value is None else "invalid_type")
        assert isinstance(filename, str)
        assert isinstance(content_type, str)
        assert isinstance(content, str)
        try:
            raw = base64.b64decode(content.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise FieldError(field=f"{where}.content", code="invalid_base64",
                             reason="is not valid base64 (RFC 4648 §4)") from None
        attachments.append(Attachment(filename=filename, content_type=content_type, data=raw))
    headers: list[tuple[str, str]] = []
    raw_headers = data.get("headers") or {}
    if isinstance(raw_headers, dict):
        pairs = list(raw_headers.items())
    elif isinstance(raw_headers, list):
        pairs = []
        for i, item in enumerate(raw_headers):
            if not (isinstance(item, list) and len(item) == 2):
                raise FieldError(field=f"headers[{i}]", reason="must be a [name, value] pair",
                                 code="invalid_type")
            pairs.append((item[0], item[1]))
    else:
        raise FieldError(field="headers", reason="must be an object or a list of pairs",
                         code="invalid_type")
    for i, (name, value) in enumerate(pairs):
        if not isinstance(name, str):
            raise FieldError(field=f"headers[{i}].name", reason="must be a string",
                             code="invalid_type")
        if not isinstance(value, str):
            raise FieldError(field=f"headers[{i}].value", reason="must be a string",
                             code="invalid_type")
        headers.append((name, value))
    return MessageFields(
        from_=sender,
        to=_addresses(data, "to"),
        cc=_addresses(data, "cc"),
        bcc=_addresses(data, "bcc"),
        reply_to=_str_or_none(data, "reply_to"),
        subject=_str_or_none(data, "subject") or "",
        text=_str_or_none(data, "text"),
        html=_str_or_none(data, "html"),
        attachments=tuple(attachments),
        headers=tuple(headers),
    )


# --- bearer tokens and rate limits ---------------------------------------------------------


class TokenAuth:
    """Bearer tokens (RFC 6750 §2.1), compared in constant time.

    Every configured token is compared (``hmac.compare_digest`` over SHA-256 digests, so the
    comparison time depends neither on where the first difference is nor on the length of
    the presented token) and the loop never exits early, so timing does not tell which
    token, or how much of one, matched.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = tuple((name, hashlib.sha256(secret.encode("utf-8")).digest())
                             for name, secret in tokens.items())

    def verify(self, authorization: str | None) -> str | None:
        """The token's name for an ``Authorization: Bearer <token>`` value, else None."""
        if not authorization:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = hashlib.sha256(
            credentials.strip().encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for name, digest in self._tokens:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found


class SubmitRateLimiter:
    """Token buckets per client IP (IPv6: per /64) and per API token (see
    ``limits.SUBMIT_IP_*`` / ``SUBMIT_TOKEN_*``); each accepted request takes one token."""

    def __init__(
        self,
        *,
        token_burst: int = limits.SUBMIT_TOKEN_BURST,
        token_refill: float = limits.SUBMIT_TOKEN_REFILL,
        ip_burst: int = limits.SUBMIT_IP_BURST,
        ip_refill: float = limits.SUBMIT_IP_REFILL,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._ip = TokenBucket(burst=ip_burst, refill=ip_refill, clock=clock)
        self._token = TokenBucket(burst=token_burst, refill=token_refill, clock=clock)

    @staticmethod
    def _take(bucket: TokenBucket, key: str) -> float:
        wait = bucket.retry_after(key)
        if wait <= 0:
            bucket.take(key)
        return wait

    def allow_ip(self, ip: str) -> float:
        """0.0 (and one token taken) if ``ip`` may make a request now, else seconds to wait."""
        return self._take(self._ip, ip_key(ip))

    def allow_token(self, name: str) -> float:
        """0.0 (and one token taken) if the API token ``name`` may submit now, else seconds."""
        return self._take(self._token, name)


# --- from the configuration -------------------------------------------------------------------


def submitter_from_config(
    config: Config,
    spool: Spool,
    *,
    clock: Clock = SYSTEM_CLOCK,
    randbytes: Callable[[int], bytes] = secrets.token_bytes,
) -> Submitter:
    """A :class:`Submitter` for ``[submission_api]`` (DKIM keys read from their files)."""
    api = config.submission_api
    keys: list[DKIMKey] = []
    for i, item in enumerate(api.dkim):
        where = f"submission_api.dkim[{i}].key"
        try:
            data = Path(item.key).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {item.key}: {exc.strerror}", key=where) from None
        try:
            keys.append(DKIMKey(domain=item.domain, selector=item.selector,
                                key=load_private_key(data)))
        except MailmoatError as exc:
            raise ConfigError(str(exc), key=where) from None
    allowed = api.allowed_from_domains or config.relay.local_domains
    policy = SubmitPolicy(
        allowed_from_domains=tuple(allowed),
        envelope_from=api.envelope_from,
        max_message_size=api.max_message_size,
        dkim_keys=tuple(keys),
    )
    return Submitter(spool=spool, policy=policy, clock=clock, randbytes=randbytes)
