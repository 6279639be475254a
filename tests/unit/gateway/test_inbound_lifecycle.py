"""InboundMessage's background lookups (gateway/inbound.py): started when the header section
is complete, stopped by abort(), never leaving an unretrieved task exception behind, and the
same verdict whether or not an event loop was running while the message was fed."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailmoat.auth.dkim import key_record, sign, txt_strings
from mailmoat.clock import FixedClock
from mailmoat.gateway.inbound import Action, InboundPipeline, InboundPolicy
from mailmoat.resolver import Answer, FakeResolver, RRType

NOW = 1_790_000_000.0
KEY = ed25519.Ed25519PrivateKey.generate()
MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def zone() -> FakeResolver:
    fake = FakeResolver()
    fake.add_txt("example.test", "v=spf1 ip4:192.0.2.10 -all")
    fake.add_txt("_dmarc.example.test", "v=DMARC1; p=reject")
    fake.add_txt("ed._domainkey.example.test", *txt_strings(key_record(KEY)))
    return fake


def signed() -> bytes:
    return sign(MESSAGE, "example.test", "ed", KEY, timestamp=int(NOW) - 60) + MESSAGE


class Broken:
    """A resolver whose key lookups fail with an error no DKIM code expects (a bug
    elsewhere, say): the prefetch task ends with that exception."""

    def __init__(self, inner: FakeResolver) -> None:
        self.inner = inner

    async def resolve(self, name: str, rrtype: RRType) -> Answer:
        if "._domainkey." in name:
            raise RuntimeError("resolver bug")
        return await self.inner.resolve(name, rrtype)


def pipeline(resolver: Any) -> InboundPipeline:
    return InboundPipeline(InboundPolicy(authserv_id="mx.example.org"), resolver=resolver,
                           clock=FixedClock(wall=NOW))


async def test_abort_retrieves_a_failed_prefetch() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        msg = pipeline(Broken(zone())).start(ip="192.0.2.10", helo="h",
                                             mail_from="alice@example.test")
        msg.feed(signed())
        prefetch = msg._prefetch
        assert prefetch is not None
        for _ in range(5):  # let the lookups run and fail
            await asyncio.sleep(0)
        assert prefetch.done()
        assert isinstance(prefetch.exception(), RuntimeError)
        # a second, fresh message that is aborted without anyone looking at its task
        msg2 = pipeline(Broken(zone())).start(ip="192.0.2.10", helo="h",
                                              mail_from="alice@example.test")
        msg2.feed(signed())
        for _ in range(5):
            await asyncio.sleep(0)
        assert msg2._prefetch is not None
        assert msg2._prefetch.done()
        msg2.abort()
        del msg, msg2, prefetch
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in reported if "never retrieved" in str(c.get("message", ""))], reported


async def test_abort_cancels_pending_lookups() -> None:
    msg = pipeline(zone()).start(ip="192.0.2.10", helo="h", mail_from="alice@example.test")
    msg.feed(signed())
    prefetch, spf = msg._prefetch, msg._spf
    assert isinstance(prefetch, asyncio.Task)
    assert isinstance(spf, asyncio.Task)
    msg.abort()
    await asyncio.sleep(0)
    assert prefetch.cancelled()
    assert spf.cancelled()


async def test_failed_prefetch_still_gives_a_verdict() -> None:
    # The key lookup is redone at the end (and fails the same way: DKIM's own problem to
    # report, here an exception the caller sees, as before the prefetch existed).
    msg = pipeline(Broken(zone())).start(ip="192.0.2.10", helo="h",
                                         mail_from="alice@example.test")
    msg.feed(signed())
    with pytest.raises(RuntimeError):
        await msg.finish()


async def test_warm_up_asks_for_the_key_and_the_dmarc_record() -> None:
    fake = zone()
    msg = pipeline(fake).start(ip="192.0.2.10", helo="h", mail_from="alice@example.test")
    msg.feed(signed())
    for _ in range(5):
        await asyncio.sleep(0)
    asked = [name for name, rrtype in fake.queries if rrtype is RRType.TXT]
    assert "ed._domainkey.example.test" in asked
    assert "_dmarc.example.test" in asked
    verdict = await msg.finish()
    assert verdict.action is Action.DELIVER
    assert verdict.authentication.dmarc.result.value == "pass"


def test_fed_without_a_running_loop_gives_the_same_verdict() -> None:
    # RFC 7489 §6.6.2-§6.6.4 outcomes do not depend on when the lookups ran.
    def run(feed_outside: bool) -> Any:
        p = pipeline(zone())
        spf = None
        if feed_outside:
            msg = p.start(ip="203.0.113.9", helo="h", mail_from="x@example.test",
                          spf=asyncio.run(p._spf("203.0.113.9", "h", "x@example.test")))
            msg.feed(signed())  # no loop: no prefetch task
            assert msg._prefetch is None
            return asyncio.run(msg.finish())

        async def inside() -> Any:
            msg = p.start(ip="203.0.113.9", helo="h", mail_from="x@example.test", spf=spf)
            msg.feed(signed())
            return await msg.finish()

        return asyncio.run(inside())

    outside, inside = run(True), run(False)
    assert outside.action is inside.action is Action.DELIVER  # DKIM aligned: dmarc=pass
    assert outside.authentication.authentication_results \
        == inside.authentication.authentication_results
