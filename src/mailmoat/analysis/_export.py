"""A header report as plain JSON-able data (layer L2, no I/O).

The shape is the ``mailmoat headers --json`` contract: ``hops[]`` in travel order (hop 1 is
the oldest stamp) with ``tls`` ("yes" / "no" / "unknown" / "n/a" for a local hand-off),
``tls_version``, ``cipher``, ``delay_s``, and ``verdict`` (one sentence) with
``verdict_status`` and the trusted/claimed split.
"""

from __future__ import annotations

from typing import Any

from mailmoat.analysis.hops import HeaderReport, Hop

__all__ = ["report_to_dict"]


def _hop(hop: Hop) -> dict[str, Any]:
    s = hop.stamp
    return {
        "hop": hop.number,
        "field_index": hop.field_index,
        "from": s.from_name,
        "from_helo": s.from_helo,
        "from_rdns": s.from_rdns,
        "ip": s.from_ip,
        "by": s.by_name,
        "by_ip": s.by_ip,
        "by_software": s.by_software,
        "protocol": s.protocol,
        "id": s.id,
        "for": s.recipient,
        "tls": s.tls.value,
        "tls_version": s.tls_version,
        "cipher": s.cipher,
        "tls_bits": s.tls_bits,
        "tls_evidence": s.tls_evidence,
        "transport": s.transport.value,
        "authenticated": s.authenticated,
        "timestamp": (
            s.timestamp.isoformat().replace("+00:00", "Z") if s.timestamp is not None else None
        ),
        "date": s.date_text,
        "delay_s": hop.delay_s,
        "inside": hop.inside,
        "trusted": hop.inside,
        "flags": list(hop.flags),
        "raw": s.text,
    }


def report_to_dict(report: HeaderReport) -> dict[str, Any]:
    """The report as dicts, lists, strings, numbers, booleans and ``None``."""
    v = report.verdict
    return {
        "verdict": v.summary,
        "verdict_status": v.status.value,
        "not_encrypted_hops": list(v.not_encrypted),
        "unknown_hops": list(v.unknown),
        "trust": {
            "boundary": report.boundary,
            "organisation": list(report.organisation),
            "entry_hop": v.entry_hop,
            "trusted_hops": [h.number for h in report.hops if h.inside],
            "claimed_hops": [h.number for h in report.hops if not h.inside],
            "trusted_status": v.trusted_status.value,
            "trusted_summary": v.trusted_summary,
            "claimed_status": v.claimed_status.value,
            "claimed_summary": v.claimed_summary,
        },
        "received_total": report.received_total,
        "received_analysed": report.analysed,
        "hops": [_hop(h) for h in report.hops],
        "authentication_results": [
            {
                "field_index": a.field_index,
                "authserv_id": a.results.authserv_id,
                "trusted": a.trusted,
                "results": [
                    {
                        "method": r.method,
                        "result": r.result,
                        "reason": r.reason,
                        "comment": r.comment,
                        "properties": dict(r.properties),
                    }
                    for r in a.results.results
                ],
                "problems": list(a.results.problems),
            }
            for a in report.authentication
        ],
        "dkim_signatures": [
            {"d": d.domain, "s": d.selector, "a": d.algorithm, "i": d.identity,
             "problem": d.problem}
            for d in report.dkim
        ],
        "arc": {
            "instances": [
                {"i": a.instance, "cv": a.cv, "d": a.domain, "s": a.selector,
                 "complete": a.has_seal and a.has_message_signature and a.has_results}
                for a in report.arc.instances
            ],
            "latest_cv": report.arc.latest_cv,
            "problems": list(report.arc.problems),
        },
        "header_defects": [
            {"line": d.line, "defect": d.kind.name.lower(), "text": d.kind.value}
            for d in report.header_defects
        ],
        "warnings": list(report.warnings),
    }
