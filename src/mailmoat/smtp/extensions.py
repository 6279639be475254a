"""ESMTP extensions: what the server advertises, and the MAIL/RCPT parameters it honours.

SECURITY
    Trusts nothing: the inputs are ``(KEYWORD, value)`` pairs already split by
    :mod:`mailmoat.smtp._abnf` from a peer's MAIL or RCPT line (so each is bounded by the
    command-line limit). Bounds: SIZE at most 20 digits (RFC 1870), ENVID at most
    ``DSN_ENVID_MAX`` characters and ORCPT at most ``DSN_ORCPT_MAX`` (RFC 3461 §4.4/§4.2).
    Refuses, with the reply to send: a parameter of an extension not advertised on *this*
    connection (REQUIRETLS outside TLS, SMTPUTF8 when off, any ESMTP parameter after HELO),
    unknown keywords (555 5.5.4, RFC 5321 §4.1.1.11), a malformed value (501 5.5.4), and a
    declared SIZE above our maximum (552 5.3.4, RFC 1870 §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mailmoat.limits import DSN_ENVID_MAX, DSN_ORCPT_MAX, SMTP_SIZE_DIGITS_MAX
from mailmoat.smtp._abnf import Param, xtext_decode
from mailmoat.smtp.replies import Replies, Reply, printable

__all__ = [
    "Advertised",
    "MailParams",
    "ParameterError",
    "RcptParams",
    "ehlo_keywords",
    "parse_mail_params",
    "parse_rcpt_params",
]


class ParameterError(ValueError):
    """An ESMTP parameter is refused; ``reply`` is what to answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True, slots=True, kw_only=True)
class Advertised:
    """The extensions in effect on a connection right now (they change with EHLO, TLS, AUTH)."""

    esmtp: bool = True
    size: int | None = None
    eightbitmime: bool = False
    smtputf8: bool = False
    pipelining: bool = False
    enhancedstatuscodes: bool = True
    chunking: bool = False
    dsn: bool = False
    starttls: bool = False
    requiretls: bool = False
    auth: tuple[str, ...] = ()
    vrfy: bool = True
    help: bool = True


def ehlo_keywords(adv: Advertised) -> list[str]:
    """The ehlo-line keywords (RFC 5321 §4.1.1.1) for ``adv``, in a stable order."""
    lines: list[str] = []
    if adv.pipelining:
        lines.append("PIPELINING")  # RFC 2920
    if adv.size is not None:
        lines.append(f"SIZE {adv.size}")  # RFC 1870 §4: "SIZE" [SP number]
    if adv.eightbitmime:
        lines.append("8BITMIME")  # RFC 6152
    if adv.smtputf8:
        lines.append("SMTPUTF8")  # RFC 6531
    if adv.enhancedstatuscodes:
        lines.append("ENHANCEDSTATUSCODES")  # RFC 2034
    if adv.chunking:
        lines.append("CHUNKING")  # RFC 3030
    if adv.dsn:
        lines.append("DSN")  # RFC 3461
    if adv.starttls:
        lines.append("STARTTLS")  # RFC 3207
    if adv.requiretls:
        lines.append("REQUIRETLS")  # RFC 8689 §3
    if adv.auth:
        lines.append("AUTH " + " ".join(adv.auth))  # RFC 4954 §3
    if adv.vrfy:
        lines.append("VRFY")
    if adv.help:
        lines.append("HELP")
    return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class MailParams:
    """The MAIL FROM parameters we honour, validated (raw pairs kept in ``raw``)."""

    size: int | None = None  # RFC 1870 declared size
    body: str | None = None  # RFC 6152 / RFC 1652: "7BIT" | "8BITMIME"
    smtputf8: bool = False  # RFC 6531 §3.4
    ret: str | None = None  # RFC 3461 §4.3: "FULL" | "HDRS"
    envid: str | None = None  # RFC 3461 §4.4, xtext-decoded
    requiretls: bool = False  # RFC 8689 §4.1
    auth: str | None = None  # RFC 4954 §5 AUTH=<mailbox>|<>, xtext-decoded
    raw: tuple[Param, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptParams:
    """The RCPT TO parameters we honour (RFC 3461 §4.1/§4.2)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of SUCCESS/FAILURE/DELAY
    orcpt: tuple[str, str] | None = None  # (addr-type, original recipient; xtext-decoded)
    raw: tuple[Param, ...] = ()


_BAD_VALUE: Final = Replies.SYNTAX_ERROR_IN_PARAMETERS
_UNKNOWN: Final = Replies.PARAMETERS_NOT_RECOGNIZED
_NOTIFY_VALUES: Final = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def _bad(keyword: str, why: str) -> ParameterError:
    return ParameterError(_BAD_VALUE.with_text(printable(f"Invalid {keyword} parameter: {why}")))


def _unknown(keyword: str) -> ParameterError:
    return ParameterError(
        _UNKNOWN.with_text(printable(f"Parameter {keyword} not recognized or not offered"))
    )


def _no_value(keyword: str, value: str | None) -> None:
    if value is not None:
        raise _bad(keyword, "takes no value")


def _xtext(keyword: str, value: str | None, limit: int) -> str:
    if value is None:
        raise _bad(keyword, "needs a value")
    if len(value) > limit:
        raise _bad(keyword, f"longer than {limit} characters")
    try:
        return xtext_decode(value)
    except ValueError:
        raise _bad(keyword, "not valid xtext (RFC 3461 4)") from None


def parse_mail_params(
    params: tuple[Param, ...], adv: Advertised, *, tls_active: bool
) -> MailParams:
    """Validate MAIL FROM parameters against what ``adv`` offers; ParameterError if refused."""
    size: int | None = None
    body: str | None = None
    smtputf8 = requiretls = False
    ret = envid = auth = None
    for keyword, value in params:
        if not adv.esmtp:
            # RFC 5321 §4.1.1.11 / RFC 1869: extensions need EHLO.
            raise _unknown(keyword)
        if keyword == "SIZE" and adv.size is not None:
            # RFC 1870 §3: size-param ::= "SIZE=" size-value; size-value ::= 1*20DIGIT
            if value is None or not value.isascii() or not value.isdigit():
                raise _bad(keyword, "not a number")
            if len(value) > SMTP_SIZE_DIGITS_MAX:
                raise _bad(keyword, "more than 20 digits")
            size = int(value)
            if adv.size and size > adv.size:
                # RFC 1870 §6.1: "552 message size exceeds fixed maximium message size".
                raise ParameterError(Replies.MESSAGE_TOO_BIG)
        elif keyword == "BODY" and adv.eightbitmime:
            # RFC 6152 §2: body-value ::= "7BIT" / "8BITMIME" (BINARYMIME is not offered).
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise _bad(keyword, "must be 7BIT or 8BITMIME")
            body = value.upper()
        elif keyword == "SMTPUTF8" and adv.smtputf8:
            _no_value(keyword, value)  # RFC 6531 §3.4: "SMTPUTF8" takes no value
            smtputf8 = True
        elif keyword == "RET" and adv.dsn:
            # RFC 3461 §4.3: ret-value = "FULL" / "HDRS"
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise _bad(keyword, "must be FULL or HDRS")
            ret = value.upper()
        elif keyword == "ENVID" and adv.dsn:
            envid = _xtext(keyword, value, DSN_ENVID_MAX)  # RFC 3461 §4.4
        elif keyword == "REQUIRETLS" and adv.requiretls and tls_active:
            # RFC 8689 §4.1: only on a TLS session, and it takes no value.
            _no_value(keyword, value)
            requiretls = True
        elif keyword == "AUTH" and adv.auth:
            # RFC 4954 §5: auth-param = "AUTH=" ( mailbox / "<>" ) as xtext.
            auth = _xtext(keyword, value, DSN_ORCPT_MAX)
        else:
            raise _unknown(keyword)
    return MailParams(
        size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid,
        requiretls=requiretls, auth=auth, raw=params,
    )


_NO_RCPT_PARAMS: Final = RcptParams(notify=None, orcpt=None, raw=())


def parse_rcpt_params(params: tuple[Param, ...], adv: Advertised) -> RcptParams:
    """Validate RCPT TO parameters (only DSN's NOTIFY and ORCPT are defined)."""
    if not params:  # the common case: one frozen value serves every recipient
        return _NO_RCPT_PARAMS
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    for keyword, value in params:
        if keyword == "NOTIFY" and adv.dsn and adv.esmtp:
            # RFC 3461 §4.1: notify-esmtp-value = "NEVER" / 1#notify-list-element
            # notify-list-element = "SUCCESS" / "FAILURE" / "DELAY"
            if value is None:
                raise _bad(keyword, "needs a value")
            items = tuple(v.upper() for v in value.split(","))
            if items != ("NEVER",) and (
                not set(items) <= _NOTIFY_VALUES or len(set(items)) != len(items)
            ):
                raise _bad(keyword, "must be NEVER or a list of SUCCESS, FAILURE, DELAY")
            notify = items
        elif keyword == "ORCPT" and adv.dsn and adv.esmtp:
            # RFC 3461 §4.2: orcpt-value = addr-type ";" xtext; addr-type = atom
            if value is None or len(value) > DSN_ORCPT_MAX:
                raise _bad(keyword, f"missing or longer than {DSN_ORCPT_MAX} characters")
            addr_type, sep, text = value.partition(";")
            if not sep or not addr_type or not addr_type.isascii() or not all(
                ch.isalnum() or ch in "!#$%&'*+-/=?^_`{|}~" for ch in addr_type
            ):
                raise _bad(keyword, "must be addr-type;xtext")
            if addr_type.lower() == "rfc822":
                text = _xtext(keyword, text, DSN_ORCPT_MAX)
            orcpt = (addr_type, text)
        else:
            raise _unknown(keyword)
    return RcptParams(notify=notify, orcpt=orcpt, raw=params)
