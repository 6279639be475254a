"""The inbound pipeline wired the way the SMTP session and the delivery use it: chunks go to
the spool writer and the pipeline together; a reject aborts the writer (nothing stored); an
accepted message is committed, its verdict recorded, and delivered (Maildir, the quarantine
folder for quarantine) through the header edits applied to the spooled bytes as a stream.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailmoat.auth.dkim import key_record, sign, txt_strings
from mailmoat.clock import FixedClock
from mailmoat.gateway.deliver import deliver_maildir
from mailmoat.gateway.inbound import (
    Action,
    HeaderEditor,
    HeaderEdits,
    InboundPipeline,
    InboundPolicy,
)
from mailmoat.resolver import FakeResolver
from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.store import SQLiteStore

pytestmark = pytest.mark.timeout(60)

NOW = 1_790_000_000.0
KEY = ed25519.Ed25519PrivateKey.generate()
RECEIVED = b"Received: from h (h [203.0.113.9]) by mx.example.org; Sat, 28 Nov 2026\r\n"


def resolver() -> FakeResolver:
    r = FakeResolver()
    for domain, dmarc in (("reject.test", "v=DMARC1; p=reject"),
                          ("quar.test", "v=DMARC1; p=quarantine")):
        r.add_a(domain, "192.0.2.1")
        r.add_txt(domain, "v=spf1 -all")
        r.add_txt(f"_dmarc.{domain}", dmarc)
    r.add_txt("ed._domainkey.reject.test", *txt_strings(key_record(KEY)))
    return r


def message(sender: str) -> bytes:
    return (f"From: {sender}\r\nTo: bob@example.org\r\nSubject: s\r\n\r\n".encode()
            + b"body line\r\n" * 2000)


async def receive(spool: Spool, pipeline: InboundPipeline, data: bytes,
                  store: SQLiteStore) -> tuple[str | None, Action, str]:
    """What the session does from DATA to the end of data (returns spool ID, action, edits)."""
    writer = spool.open_writer(deferred=True)
    writer.write(RECEIVED)
    inbound = pipeline.start(ip="203.0.113.9", helo="h", mail_from="", queue_id=writer.id)
    inbound.feed(RECEIVED)
    for i in range(0, len(data), 1000):
        chunk = data[i : i + 1000]
        writer.write(chunk)
        inbound.feed(chunk)
    verdict = await inbound.finish()
    envelope = Envelope(mail_from="", rcpts=(Recipient(address="bob@example.org"),),
                        received_at=NOW, client_ip="203.0.113.9", helo="h")
    if verdict.action is Action.REJECT:
        writer.abort()
        return None, verdict.action, ""
    spool_id = await writer.commit(envelope)
    await store.record_verdict(verdict.record(spool_id=spool_id, envelope=envelope))
    return spool_id, verdict.action, verdict.edits.to_json()


def deliver(spool: Spool, spool_id: str, edits_json: str, maildir: Path) -> bytes:
    """What the delivery does: stream the spooled bytes through the edits."""
    raw = spool.read_message(spool_id)
    editor = HeaderEditor(HeaderEdits.from_json(edits_json))
    out = b"".join(editor.feed(raw[i : i + 4096]) for i in range(0, len(raw), 4096))
    out += editor.close()
    deliver_maildir(maildir, out, fsync=False)
    return out


async def test_session_flow(tmp_path: Path) -> None:
    spool, _ = Spool.open(tmp_path / "spool", fsync=False)
    store = await SQLiteStore.open(tmp_path / "v.db")
    pipeline = InboundPipeline(InboundPolicy(authserv_id="mx.example.org",
                                             quarantine_folder=".Junk"),
                               resolver=resolver(), clock=FixedClock(wall=NOW))
    try:
        # spoofed p=reject: refused, nothing in the spool
        sid, action, _ = await receive(spool, pipeline, message("a@reject.test"), store)
        assert (sid, action) == (None, Action.REJECT)
        assert spool.list() == []
        # aligned DKIM: delivered with our A-R on top, above our Received field
        signed = sign(message("a@reject.test"), "reject.test", "ed", KEY,
                      timestamp=int(NOW)) + message("a@reject.test")
        sid, action, edits = await receive(spool, pipeline, signed, store)
        assert sid is not None
        assert action is Action.DELIVER
        out = deliver(spool, sid, edits, tmp_path / "Maildir")
        assert out.startswith(b"Authentication-Results: mx.example.org;")
        assert out.index(RECEIVED) > 0
        assert out.endswith(signed.split(b"\r\n\r\n", 1)[1])
        row = await store.get_verdict(sid)
        assert row is not None
        assert (row.dmarc_result, row.disposition) == ("pass", "none")
        # p=quarantine: stored, delivered into the quarantine folder with the header
        sid, action, edits = await receive(spool, pipeline, message("c@quar.test"), store)
        assert sid is not None
        assert action is Action.QUARANTINE
        out = deliver(spool, sid, edits, tmp_path / "Maildir" / ".Junk")
        assert out.startswith(b"X-Mailmoat-Quarantine: yes")
        [file] = list((tmp_path / "Maildir" / ".Junk" / "new").iterdir())
        assert file.read_bytes() == out
        row = await store.get_verdict(sid)
        assert row is not None
        assert row.disposition == "quarantine"
    finally:
        await store.close()
        await spool.aclose()
        await asyncio.sleep(0)
