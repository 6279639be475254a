"""The chain: order, delays, clock skew, the trust boundary and the verdict."""

from __future__ import annotations

from datetime import UTC, datetime

from mailmoat.analysis import VerdictStatus, analyse_headers, registered_domain, report_to_dict
from mailmoat.message import parse_headers

# A message that travelled: laptop -> submission (TLS) -> their MX relay (no TLS!) -> our MX
# (TLS) -> our mailbox server (TLS). Hand-written; times 10:00:00, :05, :10, :20, :21 UTC.
CHAIN = (
    b"Received: from mx1.ours.example (mx1.ours.example [10.0.0.5])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
    b"\tby mbox.ours.example (Postfix) with ESMTPS id A1; Mon, 1 Jan 2024 10:00:21 +0000\r\n"
    b"Authentication-Results: mx1.ours.example; spf=pass smtp.mailfrom=theirs.example;\r\n"
    b"\tdkim=pass header.d=theirs.example; dmarc=pass header.from=theirs.example\r\n"
    b"Received: from out.theirs.example (out.theirs.example [203.0.113.10])\r\n"
    b"\t(using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits))\r\n"
    b"\tby mx1.ours.example (Postfix) with ESMTPS id B2; Mon, 1 Jan 2024 11:00:20 +0100\r\n"
    b"Authentication-Results: mx1.ours.example; dkim=fail header.d=forged.example\r\n"
    b"Received: from sub.theirs.example (sub.theirs.example [203.0.113.20])\r\n"
    b"\tby out.theirs.example (Postfix) with ESMTP id C3; Mon, 1 Jan 2024 10:00:10 +0000\r\n"
    b"Received: from laptop (unknown [198.51.100.7])\r\n"
    b"\tby sub.theirs.example (Postfix) with ESMTPSA id D4; Mon, 1 Jan 2024 10:00:05 +0000\r\n"
    b"Received: by laptop (Postfix, from userid 1000) id E5; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"From: a@theirs.example\r\n"
    b"\r\n"
)


def test_hops_in_travel_order_with_delays() -> None:
    report = analyse_headers(parse_headers(CHAIN))
    assert [h.number for h in report.hops] == [1, 2, 3, 4, 5]
    assert [h.stamp.by_name for h in report.hops] == [
        "laptop", "sub.theirs.example", "out.theirs.example", "mx1.ours.example",
        "mbox.ours.example"]
    assert [h.delay_s for h in report.hops] == [None, 5.0, 5.0, 10.0, 1.0]
    assert [h.field_index for h in report.hops] == [6, 5, 4, 2, 0]  # A-R fields at 1 and 3


def test_heuristic_boundary_and_verdicts() -> None:
    report = analyse_headers(parse_headers(CHAIN))
    assert report.organisation == ("ours.example",)
    assert [h.inside for h in report.hops] == [False, False, False, True, True]
    v = report.verdict
    assert v.status is VerdictStatus.NOT_ENCRYPTED
    assert v.not_encrypted == (3,)
    assert v.summary.startswith("not encrypted on hop 3 (sub.theirs.example [203.0.113.20]")
    assert v.entry_hop == 4
    assert v.trusted_status is VerdictStatus.ENCRYPTED
    assert "entry hop 4" in v.trusted_summary
    assert v.claimed_status is VerdictStatus.NOT_ENCRYPTED
    # A-R above the entry stamp: ours; the one below it was not written by us.
    assert [a.trusted for a in report.authentication] == [True, False]


def test_configured_boundary() -> None:
    report = analyse_headers(parse_headers(CHAIN), trusted_hosts=["mbox.ours.example"])
    assert [h.inside for h in report.hops] == [False, False, False, False, True]
    assert report.verdict.entry_hop is None or report.verdict.entry_hop == 5
    nobody = analyse_headers(parse_headers(CHAIN), our_domains=["elsewhere.example"])
    assert not any(h.inside for h in nobody.hops)
    assert "no hop was written" in nobody.verdict.trusted_summary
    wide = analyse_headers(parse_headers(CHAIN), our_domains=["ours.example", "theirs.example"])
    # the bottom stamp's by-host "laptop" is not a domain and has nothing below it
    assert [h.inside for h in wide.hops] == [False, True, True, True, True]


def test_forged_stamp_below_an_external_peer_is_not_trusted() -> None:
    """A sender cannot extend our boundary by writing 'by mx1.ours.example' below its hop."""
    forged = (
        b"Received: from evil.example (evil.example [203.0.113.66])\r\n"
        b"\tby mx1.ours.example (Postfix) with ESMTP id X; Mon, 1 Jan 2024 10:00:05 +0000\r\n"
        b"Received: from fake (fake [10.9.9.9]) (using TLSv1.3 with cipher X)\r\n"
        b"\tby mx2.ours.example (Postfix) with ESMTPS id Y; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"\r\n"
    )
    report = analyse_headers(parse_headers(forged))
    assert [h.inside for h in report.hops] == [False, True]
    assert report.verdict.entry_hop == 2
    assert report.verdict.trusted_status is VerdictStatus.NOT_ENCRYPTED


def test_reversed_and_future_timestamps_are_flagged() -> None:
    headers = parse_headers(
        b"Received: from b (b [192.0.2.2]) by c.example with ESMTPS; 1 Jan 2024 09:00:00 +0000\r\n"
        b"Received: from a (a [192.0.2.1]) by b.example with ESMTPS; 1 Jan 2024 10:00:00 +0000\r\n"
        b"\r\n"
    )
    report = analyse_headers(headers, now=datetime(2023, 1, 1, tzinfo=UTC))
    assert report.hops[1].delay_s == -3600.0
    assert any("reversed" in f for f in report.hops[1].flags)
    assert any("future" in f for f in report.hops[0].flags)
    small = parse_headers(
        b"Received: from b (b [192.0.2.2]) by c with ESMTPS; 1 Jan 2024 09:59:50 +0000\r\n"
        b"Received: from a (a [192.0.2.1]) by b with ESMTPS; 1 Jan 2024 10:00:00 +0000\r\n\r\n"
    )
    flags = analyse_headers(small).hops[1].flags
    assert any("clock skew" in f for f in flags)
    assert not any("reversed" in f for f in flags)


def test_obsolete_tls_is_flagged_and_unknown_verdict() -> None:
    headers = parse_headers(
        b"Received: from a (a [192.0.2.1]) by b with FOO; 1 Jan 2024 10:00:00 +0000\r\n"
        b"Received: from z (z [192.0.2.9]) by a with esmtps (TLSv1:AES256-SHA:256);"
        b" 1 Jan 2024 09:00:00 +0000\r\n\r\n"
    )
    report = analyse_headers(headers)
    assert any("obsolete" in f for f in report.hops[0].flags)
    assert report.verdict.status is VerdictStatus.UNKNOWN
    assert report.verdict.summary.startswith("unknown on hop 2")


def test_no_received_fields() -> None:
    report = analyse_headers(parse_headers(b"From: a@b\r\n\r\n"))
    assert report.hops == ()
    assert report.verdict.status is VerdictStatus.NO_HOPS
    assert report_to_dict(report)["hops"] == []


def test_json_shape() -> None:
    data = report_to_dict(analyse_headers(parse_headers(CHAIN)))
    assert data["verdict"].startswith("not encrypted on hop 3")
    assert data["verdict_status"] == "not_encrypted"
    hop4 = data["hops"][3]
    assert (hop4["tls"], hop4["tls_version"], hop4["cipher"], hop4["delay_s"]) == (
        "yes", "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 10.0)
    assert hop4["timestamp"] == "2024-01-01T10:00:20Z"
    assert (hop4["from"], hop4["ip"], hop4["by"], hop4["protocol"], hop4["inside"]) == (
        "out.theirs.example", "203.0.113.10", "mx1.ours.example", "ESMTPS", True)
    assert data["trust"]["entry_hop"] == 4
    assert data["authentication_results"][0]["results"][0] == {
        "method": "spf", "result": "pass", "reason": None, "comment": None,
        "properties": {"smtp.mailfrom": "theirs.example"}}


def test_registered_domain() -> None:
    assert registered_domain("a.b.example.co.uk") == "example.co.uk"
    assert registered_domain("mx.google.com.") == "google.com"
    assert registered_domain("localhost") is None
    assert registered_domain("192.0.2.1") is None
