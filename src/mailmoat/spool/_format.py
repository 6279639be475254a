"""Spool IDs, envelopes and the on-disk record format (see :mod:`mailmoat.spool`)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NewType

from mailmoat import limits
from mailmoat.clock import SYSTEM_CLOCK, Clock
from mailmoat.errors import SpoolError
from mailmoat.net.tls import TLSInfo

SpoolID = NewType("SpoolID", str)

#: Crockford base32 (no I, L, O, U): sorts in the same order as the numbers it encodes.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

#: Trailer: magic, message length, envelope length, first 8 bytes of SHA-256(envelope JSON).
MAGIC = b"MMSPOOL1"
TRAILER = struct.Struct(">8sQQ8s")
ENVELOPE_VERSION = 1


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def make_id_factory(
    clock: Clock = SYSTEM_CLOCK, random_bytes: Callable[[int], bytes] = secrets.token_bytes
) -> Callable[[], SpoolID]:
    """IDs like ULIDs: 48-bit milliseconds since the epoch + 80 random bits, 26 characters of
    Crockford base32, so that string order is arrival order (to the millisecond)."""

    def new_id() -> SpoolID:
        millis = round(clock.now() * 1000) & ((1 << 48) - 1)
        rand = int.from_bytes(random_bytes(10), "big")
        return SpoolID(_b32(millis, 10) + _b32(rand, 16))

    return new_id


def check_id(value: str) -> SpoolID:
    """``value`` as a SpoolID; SpoolError if it is not one (never a path)."""
    if not ID_RE.match(value):
        raise SpoolError(f"not a spool ID: {value[:40]!r}")
    return SpoolID(value)


def id_time(spool_id: SpoolID) -> float:
    """The arrival time (seconds since the epoch) encoded in an ID."""
    value = 0
    for char in spool_id[:10]:
        value = value * 32 + _ALPHABET.index(char)
    return value / 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One RCPT TO, with its RFC 3461 DSN parameters."""

    address: str
    notify: tuple[str, ...] | None = None  # NOTIFY=NEVER | SUCCESS,FAILURE,DELAY
    orcpt: str | None = None  # ORCPT=addr-type;xtext, as received


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """What the SMTP session knew about a message.

    Addresses are the decoded paths without angle brackets (``""`` for the null reverse-path
    ``<>``); with SMTPUTF8 they may hold UTF-8 (RFC 6531).
    """

    mail_from: str
    rcpts: tuple[Recipient, ...]
    received_at: float
    client_ip: str | None = None
    client_port: int | None = None
    helo: str | None = None
    tls: TLSInfo | None = None
    auth_user: str | None = None
    body: str | None = None  # RFC 6152 / RFC 3030 BODY=7BIT|8BITMIME|BINARYMIME
    smtputf8: bool = False  # RFC 6531
    requiretls: bool = False  # RFC 8689
    ret: str | None = None  # RFC 3461 RET=FULL|HDRS
    envid: str | None = None  # RFC 3461 ENVID
    #: ``gateway.inbound.HeaderEdits.to_json()``: header edits (our Authentication-Results,
    #: removal of forged ones, quarantine field, ARC Set) applied when the message is
    #: delivered; None: deliver the spooled bytes as they are.
    header_edits: str | None = None
    #: the inbound policy quarantined the message
    quarantined: bool = False
    #: the Maildir folder for quarantined mail (None: the header field only)
    quarantine_folder: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledMessage:
    """A message in the spool: its envelope, and the size and SHA-256 of its bytes."""

    id: SpoolID
    envelope: Envelope
    size: int
    sha256: str
    path: Path


def envelope_to_json(
    spool_id: SpoolID, envelope: Envelope, *, size: int, sha256: str
) -> bytes:
    record: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "id": spool_id,
        "mail_from": envelope.mail_from,
        "rcpts": [
            {"address": r.address, "notify": list(r.notify) if r.notify is not None else None,
             "orcpt": r.orcpt}
            for r in envelope.rcpts
        ],
        "received_at": envelope.received_at,
        "client_ip": envelope.client_ip,
        "client_port": envelope.client_port,
        "helo": envelope.helo,
        "tls": envelope.tls.as_dict() if envelope.tls else None,
        "auth_user": envelope.auth_user,
        "body": envelope.body,
        "smtputf8": envelope.smtputf8,
        "requiretls": envelope.requiretls,
        "ret": envelope.ret,
        "envid": envelope.envid,
        "header_edits": envelope.header_edits,
        "quarantined": envelope.quarantined,
        "quarantine_folder": envelope.quarantine_folder,
        "size": size,
        "sha256": sha256,
    }
    # ensure_ascii: lone surrogates (undecodable bytes kept by surrogateescape) survive as \u
    # escapes; the record is pure ASCII.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _opt_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise SpoolError(f"envelope field {key} is not a string")
    return value


def _opt_bool(record: Mapping[str, Any], key: str) -> bool:
    value = record.get(key, False)
    if not isinstance(value, bool):
        raise SpoolError(f"envelope field {key} is not a boolean")
    return value


def envelope_from_json(data: bytes) -> tuple[SpoolID, Envelope, int, str]:
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpoolError(f"envelope is not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("v") != ENVELOPE_VERSION:
        raise SpoolError("envelope has an unknown version")
    try:
        rcpts = tuple(
            Recipient(
                address=str(r["address"]),
                notify=tuple(r["notify"]) if r.get("notify") is not None else None,
                orcpt=r.get("orcpt"),
            )
            for r in record["rcpts"]
        )
        tls = record.get("tls")
        envelope = Envelope(
            mail_from=str(record["mail_from"]),
            rcpts=rcpts,
            received_at=float(record["received_at"]),
            client_ip=_opt_str(record, "client_ip"),
            client_port=record.get("client_port"),
            helo=_opt_str(record, "helo"),
            tls=TLSInfo.from_dict(tls) if isinstance(tls, dict) else None,
            auth_user=_opt_str(record, "auth_user"),
            body=_opt_str(record, "body"),
            smtputf8=bool(record.get("smtputf8")),
            requiretls=bool(record.get("requiretls")),
            ret=_opt_str(record, "ret"),
            envid=_opt_str(record, "envid"),
            # absent in records written before these fields existed: the defaults
            header_edits=_opt_str(record, "header_edits"),
            quarantined=_opt_bool(record, "quarantined"),
            quarantine_folder=_opt_str(record, "quarantine_folder"),
        )
        return check_id(str(record["id"])), envelope, int(record["size"]), str(record["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SpoolError(f"envelope is malformed: {exc!r}") from None


def trailer(message_size: int, envelope_json: bytes) -> bytes:
    digest = hashlib.sha256(envelope_json).digest()[:8]
    return TRAILER.pack(MAGIC, message_size, len(envelope_json), digest)


def parse_trailer(data: bytes, file_size: int) -> tuple[int, int, bytes]:
    """(message size, envelope size, envelope digest prefix); SpoolError if inconsistent."""
    if len(data) != TRAILER.size:
        raise SpoolError("file too short for a spool record")
    magic, message_size, envelope_size, digest = TRAILER.unpack(data)
    if magic != MAGIC:
        raise SpoolError("no spool trailer (incomplete or foreign file)")
    if envelope_size > limits.SPOOL_ENVELOPE_MAX:
        raise SpoolError("envelope larger than SPOOL_ENVELOPE_MAX")
    if message_size + envelope_size + TRAILER.size != file_size:
        raise SpoolError("record lengths do not add up to the file size")
    return message_size, envelope_size, digest
