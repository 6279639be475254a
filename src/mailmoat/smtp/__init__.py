"""mailmoat.smtp: the sans-IO SMTP engine (layer L1; no asyncio, socket, ssl or clock).

Server side: :class:`ServerConnection` with :class:`ServerConfig`; events in
:mod:`mailmoat.smtp.events`; replies in :class:`Replies`; the one transition table in
:mod:`mailmoat.smtp.state`.
"""

from mailmoat.smtp._abnf import Address, AddressSyntaxError, Param
from mailmoat.smtp._receive import dot_stuff
from mailmoat.smtp.events import (
    NEED_DATA,
    AuthRequested,
    AuthResponse,
    ConnectionClosed,
    DataStarted,
    Ehlo,
    Event,
    Helo,
    Help,
    MailFrom,
    MessageChunk,
    MessageComplete,
    NeedData,
    Noop,
    ProtocolViolation,
    Quit,
    RcptTo,
    Reset,
    StartTLSRequested,
    TLSEstablished,
    Vrfy,
)
from mailmoat.smtp.extensions import Advertised, MailParams, RcptParams
from mailmoat.smtp.replies import Replies, Reply
from mailmoat.smtp.server import BareNewlinePolicy, ServerConfig, ServerConnection
from mailmoat.smtp.state import State

__all__ = [
    "NEED_DATA",
    "Address",
    "AddressSyntaxError",
    "Advertised",
    "AuthRequested",
    "AuthResponse",
    "BareNewlinePolicy",
    "ConnectionClosed",
    "DataStarted",
    "Ehlo",
    "Event",
    "Helo",
    "Help",
    "MailFrom",
    "MailParams",
    "MessageChunk",
    "MessageComplete",
    "NeedData",
    "Noop",
    "Param",
    "ProtocolViolation",
    "Quit",
    "RcptParams",
    "RcptTo",
    "Replies",
    "Reply",
    "Reset",
    "ServerConfig",
    "ServerConnection",
    "StartTLSRequested",
    "State",
    "TLSEstablished",
    "Vrfy",
    "dot_stuff",
]
