"""The Received header field that proves how a message reached us (layer L4).

Form (RFC 5321 §4.4 "Stamp", with the TLS comment in the Postfix style that header analysers,
ours included, already read)::

    Received: from HELO (RDNS [IP])
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
    \tby HOST (mailmoat) with ESMTPS id QUEUEID
    \tfor <rcpt@example.org>; Sat, 28 Nov 2026 20:48:28 +0000

The ``with`` keyword follows RFC 3848 (ESMTP, ESMTPA, ESMTPS, ESMTPSA; SMTP for HELO) and
RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA when SMTPUTF8 was used).

SECURITY: HELO, reverse DNS and the recipient come from the peer. HELO was validated by the
SMTP engine's grammar; still, every peer-supplied word is reduced here to printable ASCII
without parentheses, brackets or semicolons before it is written, so no peer can forge a
clause or a line break in our stamp.
"""

from __future__ import annotations

import re
import time

from mailmoat.net.tls import TLSInfo

__all__ = ["received_field", "rfc5322_date", "with_protocol"]

_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\[\];\\<>]")
_FOLD_WIDTH = 78


def with_protocol(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The RFC 3848 / RFC 6531 ``with`` keyword for a session."""
    base = "UTF8SMTP" if smtputf8 else "ESMTP" if esmtp else "SMTP"
    if not esmtp and not smtputf8:
        return base  # RFC 3848 defines S/A suffixes only for ESMTP
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def _safe(word: str) -> str:
    return _UNSAFE.sub("?", word)[:255] or "unknown"


def _safe_comment(text: str) -> str:
    # Inside a comment: printable ASCII and spaces; nested parentheses stay balanced because
    # TLSInfo.comment() writes them itself and strips them from peer-supplied parts.
    return re.sub(r"[^\x20-\x7e]|\\", "?", text)


def rfc5322_date(timestamp: float) -> str:
    """RFC 5322 §3.3 date-time in UTC, e.g. ``Sat, 28 Nov 2026 20:48:28 +0000``."""
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(timestamp))


def received_field(
    *,
    helo: str,
    client_ip: str,
    client_rdns: str | None,
    by_host: str,
    protocol: str,
    queue_id: str,
    recipients: tuple[str, ...],
    tls: TLSInfo | None,
    timestamp: float,
) -> bytes:
    """The complete ``Received:`` header field, folded, ending in CRLF.

    ``for <rcpt>`` is written only for a single recipient (as Postfix does), so that a list of
    Bcc recipients is never disclosed.
    """
    # RFC 5321 §4.4 TCP-info = address-literal; §4.1.3: IPv6 literals carry the "IPv6:" tag
    # (Postfix writes "[IPv6:2001:db8::1]" too). An IPv4-mapped address is shown as IPv4.
    literal = _safe(client_ip)
    if ":" in client_ip:
        literal = "IPv6:" + literal
        if client_ip.lower().startswith("::ffff:") and "." in client_ip:
            literal = _safe(client_ip[7:])
    parts = [f"from {_safe(helo)} ({_safe(client_rdns or 'unknown')} [{literal}])"]
    if tls is not None:
        # net.tls.TLSInfo.comment(): "using TLSv1.3 with cipher X (256/256 bits)"; version
        # and cipher come from OpenSSL, a client-certificate subject is made comment-safe.
        parts.append(
            f"({_safe_comment(tls.comment())})"
        )
    parts.append(f"by {_safe(by_host)} (mailmoat) with {protocol} id {_safe(queue_id)}")
    if len(recipients) == 1:
        parts.append(f"for <{_safe(recipients[0])}>")
    parts[-1] += ";"
    parts.append(rfc5322_date(timestamp))
    lines: list[str] = []
    current = "Received:"
    for part in parts:
        if len(current) + 1 + len(part) > _FOLD_WIDTH and current != "Received:":
            lines.append(current)
            current = "\t" + part
        else:
            current += " " + part
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
