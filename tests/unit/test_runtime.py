"""The gateway runtime: router, group-committed accept, queue recovery at start, the sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailmoat.clock import FixedClock
from mailmoat.errors import ConfigError, StoreError
from mailmoat.gateway.config import Config, default_config, parse_config
from mailmoat.gateway.intake import Intake
from mailmoat.gateway.runtime import (
    Runtime,
    local_destination,
    make_router,
    prepare,
    validate,
)
from mailmoat.spool import Envelope, Recipient, Spool
from mailmoat.store import AttemptResult, NewDelivery, SQLiteStore, Verdict, open_store

LISTENER = '[[listener]]\naddress = "127.0.0.1"\nport = 0\nmode = "plain"\nrole = "mx"\n'


def make_config(tmp_path: Path, extra: str = "") -> Config:
    text = (f'[server]\nhostname = "mx.test"\nworkers = 1\n{LISTENER}'
            '[relay]\nlocal_domains = ["mx.test", "bücher.example"]\n'
            '[dns]\nresolvers = ["127.0.0.1:9"]\n[spool]\nfsync = false\n' + extra)
    return parse_config(text, base_dir=tmp_path)


def envelope(*rcpts: str, sender: str = "a@example.net") -> Envelope:
    return Envelope(mail_from=sender, rcpts=tuple(Recipient(address=r) for r in rcpts),
                    received_at=time.time())


# --- the router ---------------------------------------------------------------------------------
def test_router_sends_local_domains_to_the_default_maildir_and_others_to_their_mx(
        tmp_path: Path) -> None:
    config = make_config(tmp_path)
    route = make_router(config)
    env = envelope("x@mx.test")
    maildir = f"maildir:{tmp_path.resolve()}/mail/%d/%u"
    assert local_destination(config) == maildir
    assert route(env, Recipient(address="bob@mx.test")) == maildir
    assert route(env, Recipient(address="Bob@MX.Test")) == maildir
    assert route(env, Recipient(address="Postmaster")) == maildir  # RFC 5321 §4.5.1
    assert route(env, Recipient(address="carol@example.net")) == "mx:example.net"
    assert route(env, Recipient(address="carol@Example.NET")) == "mx:example.net"
    # a subdomain of a local domain is not local unless configured
    assert route(env, Recipient(address="dave@sub.mx.test")) == "mx:sub.mx.test"
    # IDN: the configured U-label domain is local; another one goes to its MX as an A-label
    assert route(env, Recipient(address="eve@bücher.example")) == maildir
    assert route(env, Recipient(address="eve@bücher.test")) == "mx:xn--bcher-kva.test"


def test_router_uses_the_configured_destination(tmp_path: Path) -> None:
    config = make_config(tmp_path, '[delivery]\ndestination = "lmtp://127.0.0.1:24"\n')
    route = make_router(config)
    assert route(envelope(), Recipient(address="bob@mx.test")) == "lmtp://127.0.0.1:24"
    assert route(envelope(), Recipient(address="bob@example.org")) == "mx:example.org"


def test_dsn_route_goes_by_the_original_senders_domain(tmp_path: Path) -> None:
    """A DSN's envelope has the original sender as its only recipient (queue._send_dsn)."""
    route = make_router(make_config(tmp_path))
    local_sender = Envelope(mail_from="", rcpts=(Recipient(address="alice@mx.test"),),
                            received_at=0.0)
    remote_sender = Envelope(mail_from="", rcpts=(Recipient(address="bob@remote.example"),),
                             received_at=0.0)
    assert route(local_sender, local_sender.rcpts[0]).startswith("maildir:")
    assert route(remote_sender, remote_sender.rcpts[0]) == "mx:remote.example"


# --- group commit -------------------------------------------------------------------------------
class GatedStore:
    """A store whose intake() waits for a gate per call, recording each batch."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[tuple[list[NewDelivery], list[Verdict]]] = []
        self.gates: list[asyncio.Event] = []
        self.started = asyncio.Event()
        self.fail_on = fail_on

    async def intake(self, items: Sequence[NewDelivery], verdicts: Sequence[Verdict], *,
                     now: float) -> list[int]:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.batches.append((list(items), list(verdicts)))
        self.started.set()
        await gate.wait()
        if self.fail_on == len(self.batches):
            raise StoreError("SQLite: disk I/O error")
        return list(range(len(items)))


def _route(env: Envelope, rcpt: Recipient) -> str:
    return f"dest:{rcpt.address}"


async def _until(condition: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0)


async def test_accepts_while_a_transaction_is_in_flight_share_the_next_one() -> None:
    store = GatedStore()
    commits: list[int] = []
    intake = Intake(store, _route, on_commit=lambda: commits.append(1))  # type: ignore[arg-type]
    first = asyncio.ensure_future(intake.accept("A", envelope("a@x.test"), None))
    await _until(lambda: len(store.gates) == 1)
    verdict = Verdict(spool_id="C", received_at=1.0)
    rest = [asyncio.ensure_future(intake.accept(sid, envelope(f"{sid}@x.test", "z@y.test"),
                                                verdict if sid == "C" else None))
            for sid in ("B", "C", "D", "E")]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(store.gates) == 1, "no second transaction while the first is in flight"
    store.gates[0].set()
    await first
    assert not any(t.done() for t in rest), "later callers wait for their own batch"
    await _until(lambda: len(store.gates) == 2)
    items, verdicts = store.batches[1]
    assert [i.spool_id for i in items] == ["B", "B", "C", "C", "D", "D", "E", "E"]
    assert [i.destination for i in items[:2]] == ["dest:B@x.test", "dest:z@y.test"]
    assert verdicts == [verdict]
    store.gates[1].set()
    await asyncio.gather(*rest)
    assert len(store.batches) == 2
    assert (intake.transactions, intake.messages, len(commits)) == (2, 5, 2)


async def test_an_error_reaches_every_waiter_of_its_batch_only() -> None:
    store = GatedStore(fail_on=2)
    intake = Intake(store, _route)  # type: ignore[arg-type]
    first = asyncio.ensure_future(intake.accept("A", envelope("a@x.test"), None))
    await _until(lambda: len(store.gates) == 1)
    failing = [asyncio.ensure_future(intake.accept(s, envelope("b@x.test"), None))
               for s in ("B", "C", "D")]
    await asyncio.sleep(0)
    store.gates[0].set()
    await first
    await _until(lambda: len(store.gates) == 2)
    store.gates[1].set()
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    # the next call starts a fresh transaction and succeeds
    later = asyncio.ensure_future(intake.accept("E", envelope("e@x.test"), None))
    await _until(lambda: len(store.gates) == 3)
    store.gates[2].set()
    await later
    assert intake.transactions == 2


async def test_batches_are_bounded() -> None:
    store = GatedStore()
    intake = Intake(store, _route, max_batch=2)  # type: ignore[arg-type]
    calls = [asyncio.ensure_future(intake.accept(f"M{i}", envelope("a@x.test"), None))
             for i in range(5)]
    for n in range(1, 4):
        await _until(lambda n=n: len(store.gates) == n)
        store.gates[-1].set()
    await asyncio.gather(*calls)
    assert [len(b[0]) for b in store.batches] == [2, 2, 1]


async def test_group_commit_on_sqlite_uses_fewer_transactions(tmp_path: Path) -> None:
    """Real SQLite (synchronous=FULL): 200 concurrent accepts take far fewer transactions
    than messages, and every row is there."""
    store = await SQLiteStore.open(tmp_path / "q.db")
    try:
        intake = Intake(store, _route)
        await asyncio.gather(*(intake.accept(f"M{i:03d}", envelope(f"r{i}@x.test"), None)
                               for i in range(200)))
        rows = await store.list_deliveries(limit=1000)
        assert len(rows) == 200
        assert intake.transactions <= 20, intake.transactions
    finally:
        await store.close()


# --- start-up recovery and the sweep ------------------------------------------------------------
async def test_prepare_queues_spooled_messages_without_rows(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    spool = Spool(config.spool_dir, fsync=False)
    orphan = await spool.store(envelope("bob@mx.test", "carol@remote.example"), b"Subject: x\r\n\r\nhi\r\n")
    done = await spool.store(envelope("dave@mx.test"), b"Subject: y\r\n\r\nyo\r\n")
    store = await open_store(config.store_url)
    await store.enqueue([NewDelivery(spool_id=done, recipient="dave@mx.test",
                                             destination="maildir:/x/%u")], now=time.time())
    [claimed] = await store.claim(now=time.time(), owner="w", lease=60, limit=1,
                                  per_destination=1)
    await store.finish(claimed.id, "w", AttemptResult(outcome="delivered", started_at=1.0,
                                                      finished_at=2.0))
    await store.close()
    report = await prepare(config, spool)
    spool.close()
    assert report.recovered.enqueued == (orphan,)
    assert report.recovered.removed == (done,)
    assert report.store == config.store_url
    assert report.dane is False
    assert "trust" in report.dane_note
    store = await open_store(config.store_url)
    try:
        rows = await store.list_deliveries(spool_id=orphan)
    finally:
        await store.close()
    assert {(r.recipient, r.destination) for r in rows} == {
        ("bob@mx.test", local_destination(config)),
        ("carol@remote.example", "mx:remote.example")}
    assert orphan in spool.list()
    assert done not in spool.list()


async def test_sweep_queues_old_orphans_only(tmp_path: Path) -> None:
    config = make_config(tmp_path, "[delivery]\nhold = true\nmta_sts = false\n")
    spool = Spool(config.spool_dir, fsync=False)
    old_spool = Spool(config.spool_dir, fsync=False, clock=FixedClock(wall=time.time() - 3600))
    old = await old_spool.store(envelope("bob@mx.test"), b"Subject: old\r\n\r\n.\r\n")
    queued_old = await old_spool.store(envelope("eve@mx.test"), b"Subject: q\r\n\r\n.\r\n")
    old_spool.close()
    young = await spool.store(envelope("carol@mx.test"), b"Subject: young\r\n\r\n.\r\n")
    runtime = await Runtime.open(config, spool, dane=(False, "test"))
    try:
        await runtime.intake.accept(queued_old, envelope("eve@mx.test"), None)
        assert await runtime.sweep() == [old]
        assert await runtime.sweep() == []  # now it has rows
        rows = await runtime.store.list_deliveries(limit=10)
        assert sorted(r.spool_id for r in rows) == sorted([old, queued_old])
        assert young not in {r.spool_id for r in rows}
        assert await runtime.sweep(min_age=0) == [young]
    finally:
        await runtime.stop(1.0)
        await spool.aclose()


async def test_runtime_delivers_and_stops(tmp_path: Path) -> None:
    """accept -> the queue delivers into the default Maildir and empties the spool."""
    config = make_config(tmp_path, "[delivery]\nmta_sts = false\n")
    spool = Spool(config.spool_dir, fsync=False)
    runtime = await Runtime.open(config, spool, dane=(False, "test"))
    try:
        await runtime.start()
        env = envelope("bob@mx.test")
        spool_id = await spool.store(env, b"Subject: hi\r\n\r\nhello\r\n")
        fields = runtime.context_fields("mx")
        accept = fields.get("accept")
        if accept is None:
            pytest.skip("GatewayContext has no accept field in this checkout")
        await accept(spool_id, env, None)
        maildir = tmp_path.resolve() / "mail" / "mx.test" / "bob" / "new"
        deadline = time.monotonic() + 10
        while not (maildir.is_dir() and any(maildir.iterdir())) or spool.list():
            assert time.monotonic() < deadline, "not delivered"
            await asyncio.sleep(0.05)
        [path] = maildir.iterdir()
        assert path.read_bytes().endswith(b"Subject: hi\n\nhello\n")
        assert fields.get("inbound") is runtime.inbound
        assert runtime.context_fields("submission").get("signer") is runtime.signer
    finally:
        await runtime.stop(2.0)
        await spool.aclose()


# --- [delivery] settings and the first-run config -------------------------------------------------
@pytest.mark.parametrize(("setting", "key", "needle"), [
    ('destination = "ftp://files.example"', "delivery.destination", "lmtp://"),
    ('destination = "maildir:"', "delivery.destination", "path"),
    ('destination = "smtp://a b"', "delivery.destination", "spaces"),
    ("mx_port = 0", "delivery.mx_port", "greater than"),
    ("mx_port = 65536", "delivery.mx_port", "less than"),
    ('ca_file = "missing.pem"', "delivery.ca_file", "not a file"),
    ('mta_sts = "maybe"', "delivery.mta_sts", "bool"),
    ("holdd = true", "delivery.holdd", "unknown setting"),
])
def test_delivery_settings_are_validated(tmp_path: Path, setting: str, key: str,
                                         needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, f"[delivery]\n{setting}\n")
    assert info.value.key == key
    assert needle in str(info.value)


def test_delivery_paths_are_relative_to_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    config = make_config(tmp_path, '[delivery]\ndestination = "maildir:boxes/%u"\n'
                                   'ca_file = "ca.pem"\nmx_port = 2525\ndane = false\n')
    assert config.delivery.destination == f"maildir:{tmp_path.resolve()}/boxes/%u"
    assert config.delivery.ca_file == tmp_path.resolve() / "ca.pem"
    assert (config.delivery.mx_port, config.delivery.dane, config.delivery.mta_sts,
            config.delivery.hold) == (2525, False, True, False)


async def test_first_run_config_delivers_its_own_domain_into_data_dir_maildirs(
        tmp_path: Path) -> None:
    config, _ = default_config(tmp_path / "data", hostname="mail.example.org", is_root=False,
                               ipv6=False)
    route = make_router(config)
    data = (tmp_path / "data").resolve()
    assert route(envelope(), Recipient(address="me@mail.example.org")) == (
        f"maildir:{data}/mail/%d/%u")
    assert route(envelope(), Recipient(address="you@example.com")) == "mx:example.com"
    spool = Spool(config.spool_dir, fsync=False)
    report = await prepare(config, spool)
    spool.close()
    assert report.store == f"sqlite:{data}/mailmoat.db"
    assert (data / "mailmoat.db").is_file()


def test_validate_names_a_key_file_the_workers_could_not_load(tmp_path: Path) -> None:
    config = make_config(tmp_path, '[dkim_signing]\nkeys = [ { domain = "mx.test", '
                                   'selector = "s1", key = "missing.pem" } ]\n')
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert info.value.key == "dkim_signing.keys[0].key"
    validate(make_config(tmp_path))  # nothing to load: fine


async def test_refused_verdicts_share_the_group_commit_and_queue_nothing(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "q.db")
    try:
        intake = Intake(store, _route)
        sid = "20261129T002100-refused0"
        await asyncio.gather(
            intake.refused(Verdict(spool_id=sid, received_at=1.0, disposition="reject")),
            intake.accept("M001", envelope("r@x.test"), None))
        got = await store.get_verdict(sid)
        assert got is not None
        assert got.disposition == "reject"
        assert await store.list_deliveries(spool_id=sid) == []
        assert len(await store.list_deliveries(limit=10)) == 1
        assert intake.transactions == 1
    finally:
        await store.close()
