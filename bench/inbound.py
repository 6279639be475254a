"""Inbound (role mx) throughput with full verification: mailmoat vs the aiosmtpd glue
(issue #6; ``python -m bench.inbound``).

The message: the ~10 KB multipart message of ``bench.dkim``, From ``alice@example.com``,
DKIM-signed once (RSA-2048, relaxed/relaxed) by ``example.com``, whose SPF record passes for
127.0.0.0/8 and whose DMARC record is ``p=reject``. ``--sessions`` (20) concurrent plaintext
sessions on loopback, ``--per-conn`` (1) messages per connection, each row bounded by
``--messages`` and ``--seconds``, ``--rounds`` interleaved rounds (the best round of each row
is kept: the machine is shared). Rows, each server a child process:

* **mailmoat full**: the Gateway as ``mailmoat serve`` builds it (uvloop, spool fsync on, as in
  production; with its runtime: the ``accept`` group commit of the delivery rows and the
  verdict into the SQLite store before the 250, delivery held) with the mx listener's
  ``GatewayContext.inbound`` set: SPF at MAIL FROM, DKIM and ARC while DATA streams, DMARC
  and the policy at the end of DATA, the verdict's header edits kept with the spooled message;
* **mailmoat accept-only**: the same server, a second listener with ``inbound = None``;
* **glue**: what a Python user builds today: an aiosmtpd 1.4 handler (uvloop) that on DATA runs
  pyspf ``check2``, dkimpy (through authheaders ``check_dkim``), a DMARC step
  (``bench._glue.MinimalDMARC``: the record lookup and relaxed alignment through a public
  suffix list loaded once), refuses a DMARC ``p=reject`` failure with 550, adds the
  Authentication-Results field (authres) and writes + fsyncs the message. With
  ``--authheaders``, also the glue with authheaders' own ``check_dmarc``, which rebuilds its
  public suffix list on every call (~0.1 s each, four per message): ~1 message/s.

DNS: the same records, memoised in memory on both sides (a warm cache; see ``bench._glue``).
Before timing, both sides must find spf=pass, dkim=pass, dmarc=pass for the message, and after
it the spooled records are checked again. Reported: accepted messages per second, the server's
CPU (user + system, threads included; "kernel" is the system share) per message, the ratios of
issue #6: ours/glue (target >= 5x) and ours-full/ours-accept-only (target >= 50%), and the
verification step alone in this process. Options: ``--spool-only`` (mailmoat without its
runtime), ``--workers N`` (pre-forked mailmoat workers), ``--dir`` (where the spools live:
file creation costs differ per directory, ~1 ms of kernel CPU in /tmp on the development VM
against ~20 µs in /var/tmp), ``--profile inbound|accept`` (a cProfile'd run, every thread, CPU
time), ``--json`` (the cells, for tests).
"""

from __future__ import annotations

import argparse
import base64
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import _glue
from bench.smtp_server import Server, free_port

ROW_FULL = "mailmoat full (SPF+DKIM+DMARC, fsync)"
ROW_ACCEPT = "mailmoat accept-only (inbound=None, fsync)"
ROW_GLUE = "glue: aiosmtpd+pyspf+dkimpy+DMARC+fsync"
ROW_GLUE_AH = "glue with authheaders.check_dmarc"


async def check_verifiers(world: _glue.World, message: bytes) -> None:
    """Both sides must authenticate the message before anything is timed."""
    import spf
    from authheaders import check_dkim, check_dmarc  # type: ignore[import-untyped]
    from authres import SPFAuthenticationResult  # type: ignore[import-untyped]

    from mailmoat.clock import SYSTEM_CLOCK
    from mailmoat.gateway.inbound import Action, InboundPipeline, InboundPolicy, verdict_for

    pipeline = InboundPipeline(InboundPolicy(authserv_id=_glue.AUTHSERV_ID),
                               resolver=world.resolver(), clock=SYSTEM_CLOCK)
    verdict = await verdict_for(pipeline, message, ip="127.0.0.1", helo=_glue.HELO,
                                mail_from=_glue.SENDER)
    auth = verdict.authentication
    assert verdict.action is Action.DELIVER, verdict.log_line()
    assert auth.spf.result.value == "pass", verdict.log_line()
    assert [d.result.value for d in auth.dkim] == ["pass"], verdict.log_line()
    assert auth.dmarc.result.value == "pass", verdict.log_line()

    world.install_pyspf()
    dnsfunc = world.dnsfunc()
    spf_result, reason = spf.check2(i="127.0.0.1", s=_glue.SENDER, h=_glue.HELO)
    assert spf_result == "pass", (spf_result, reason)
    dkim_ar = check_dkim(message, dnsfunc=dnsfunc)
    assert dkim_ar.result == "pass", str(dkim_ar)
    spf_ar = SPFAuthenticationResult(result=spf_result, smtp_mailfrom=_glue.SENDER)
    dmarc_ar = check_dmarc(message, spf_ar, dkim_ar, dnsfunc=dnsfunc)
    assert dmarc_ar.result == "pass", str(dmarc_ar)


def verification_only(world: _glue.World, message: bytes,
                      seconds: float) -> list[tuple[str, float]]:
    """CPU µs per message of the verification step alone, in this process (no SMTP, no
    spool): mailmoat's InboundPipeline (feed + finish, header edits built) vs the glue's
    handler steps (pyspf, dkimpy, DMARC, Authentication-Results)."""
    from mailmoat.clock import SYSTEM_CLOCK
    from mailmoat.gateway.inbound import InboundPipeline, InboundPolicy, verdict_for
    from mailmoat.gateway.server import _loop_factory

    pipeline = InboundPipeline(InboundPolicy(authserv_id=_glue.AUTHSERV_ID),
                               resolver=world.resolver(), clock=SYSTEM_CLOCK)
    world.install_pyspf()
    glue = _glue._GlueInbound("", world.dnsfunc())
    glue_ah = _glue._GlueInbound("", world.dnsfunc(), dmarc="authheaders")
    loop = _loop_factory()()
    try:
        def ours() -> object:
            return loop.run_until_complete(verdict_for(
                pipeline, message, ip="127.0.0.1", helo=_glue.HELO, mail_from=_glue.SENDER))

        rows = [("mailmoat InboundPipeline", _cpu_per_call(ours, seconds)),
                ("glue (pyspf+dkimpy+MinimalDMARC+authres)", _cpu_per_call(
                    lambda: glue.verify(message, "127.0.0.1", _glue.HELO, _glue.SENDER),
                    seconds))]
        rows.append(("glue with authheaders.check_dmarc", _cpu_per_call(
            lambda: glue_ah.verify(message, "127.0.0.1", _glue.HELO, _glue.SENDER),
            seconds, limit=3)))
    finally:
        loop.close()
    return rows


def _cpu_per_call(fn: Callable[[], object], seconds: float, limit: int = 100_000) -> float:
    fn()
    n, start = 0, time.process_time()
    wall = time.monotonic() + 4 * seconds
    while n < limit:
        fn()
        n += 1
        if time.process_time() - start >= seconds or time.monotonic() >= wall:
            break
    return (time.process_time() - start) / n * 1e6


def check_spooled(work: Path, mailmoat_dir: Path, full_ran: bool) -> list[str]:
    """What the servers stored must carry the pass results (problems, or [])."""
    problems: list[str] = []
    if full_ran:
        verified = False
        for path in reversed(_glue.spool_records(spool_dir_of(mailmoat_dir))):
            _, envelope = _glue.read_spool_record(path)
            edits = envelope.get("header_edits")
            if edits:
                import json

                prepend = base64.b64decode(json.loads(edits)["prepend"]).decode()
                verified = all(f"{m}=pass" in prepend for m in ("spf", "dkim", "dmarc"))
                if not verified:
                    problems.append(f"mailmoat stored: {prepend.strip()[:200]}")
                break
        if not verified and not problems:
            problems.append("no mailmoat spool record carries header edits")
    glue_files = sorted((work / "glue-glue").iterdir()) if (work / "glue-glue").is_dir() else []
    if glue_files:
        head = glue_files[-1].read_bytes()[:600].decode("ascii", "replace")
        if not all(f"{m}=pass" in head for m in ("spf", "dkim", "dmarc")):
            problems.append(f"glue stored: {head[:200]}")
    return problems


def spool_dir_of(directory: Path) -> Path:
    from mailmoat.gateway.config import load_config

    return load_config(directory / "config.toml").spool_dir


async def run(args: argparse.Namespace, work: Path) -> tuple[list[_glue.Cell], list[str]]:
    from mailmoat.net.tls import generate_self_signed

    world = _glue.make_world(work)
    message = _glue.signed_message(world)
    await check_verifiers(world, message)
    cert, key = work / "cert.pem", work / "key.pem"
    generate_self_signed(cert, key, [_glue.MX_HOST, "127.0.0.1"])

    full_port, accept_port = free_port(), free_port()
    config = _glue.mailmoat_config(work / "mailmoat", {
        ROW_FULL: (full_port, "plain", "mx"), ROW_ACCEPT: (accept_port, "plain", "mx"),
    }, cert=cert, key=key)
    servers: list[Server] = []
    try:
        ours, info = _glue.start_child("mailmoat", work, {
            "config": str(config), "rows": {str(full_port): "inbound", str(accept_port): "accept"},
            "runtime": not args.spool_only, "gc_freeze": args.gc_freeze,
            "workers": args.workers,
        }, "mailmoat")
        servers.append(ours)
        print("mailmoat: " + ("with its runtime (accept: store rows group-committed before the "
                              "250; delivery held)" if info.get("runtime") else
                              "spool only (no runtime: no store rows)"))
        glue_ports = {"glue": "inbound"}
        if args.authheaders:
            glue_ports["glue-authheaders"] = "inbound-authheaders"
        glue, _ = _glue.start_child("glue", work, {
            "cert": str(cert), "key": str(key), "ports": glue_ports}, "glue")
        servers.append(glue)
        rows: list[tuple[str, Server, int]] = [(ROW_FULL, ours, ours.ports["inbound"])]
        rows += [(ROW_ACCEPT, ours, ours.ports["accept"]), (ROW_GLUE, glue, glue.ports["glue"])]
        if args.authheaders:
            rows.append((ROW_GLUE_AH, glue, glue.ports["glue-authheaders"]))
        traffic = _glue.Traffic.make(message, mail_from=_glue.SENDER, rcpt=_glue.LOCAL_RCPT,
                                     per_conn=args.per_conn)
        rounds = await _glue.run_rounds(
            rows, traffic, rounds=args.rounds, sessions=args.sessions, messages=args.messages,
            seconds=args.seconds, warmup=args.warmup, width=46)
    finally:
        _glue.stop_all(servers)
    problems = check_spooled(work, work / "mailmoat", any(r[0] == ROW_FULL for r in rows))
    for problem in problems:
        print("PROBLEM:", problem)
    if args.profile:
        print(await _glue.profile_child(
            work, {"config": str(config), "rows": {str(full_port): "inbound",
                                                   str(accept_port): "accept"},
                   "runtime": not args.spool_only}, args.profile,
            {"inbound": "inbound full", "accept": "accept-only"}[args.profile], traffic,
            sessions=args.sessions, messages=args.messages, seconds=min(args.seconds, 3.0),
            top=args.profile_top, spool=spool_dir_of(work / "mailmoat")))
    return _glue.best_cells(rounds), problems


def report(cells: list[_glue.Cell], alone: list[tuple[str, float]]) -> None:
    _glue.print_cells(cells)
    if alone:
        print(f"\n{'verification alone, CPU µs/message (this process)':<52}{'µs':>9}")
        for name, us in alone:
            print(f"{name:<52}{us:>9.0f}")
    by = {c.row: c for c in cells}
    _glue.ratio_head()
    _glue.ratio_line("ours full / glue >= 5x", by.get(ROW_FULL), by.get(ROW_GLUE), 5.0)
    if ROW_GLUE_AH in by:
        _glue.ratio_line("ours full / glue with authheaders >= 5x", by.get(ROW_FULL),
                         by.get(ROW_GLUE_AH), 5.0)
    _glue.ratio_line("ours full / ours accept-only >= 0.5", by.get(ROW_FULL), by.get(ROW_ACCEPT),
                     0.5)
    print("\nAll rows durable (fsync before the 250). The load generator runs in this process, "
          "on the same cores as the servers.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    _glue.common_options(p, per_conn=1)
    p.add_argument("--authheaders", action="store_true",
                   help="also the glue with authheaders' check_dmarc (slow: see MinimalDMARC)")
    p.add_argument("--verify-seconds", type=float, default=0.5,
                   help="CPU seconds per verification-alone measurement (0: skip)")
    p.add_argument("--profile", choices=("inbound", "accept"),
                   help="also a cProfile'd run of mailmoat on this listener (printed)")
    return p


def main(argv: list[str] | None = None) -> list[_glue.Cell]:
    args = parser().parse_args(argv)
    print(f"inbound benchmark (issue #6): {len(_glue.message())} B + DKIM-Signature, RSA-2048, "
          f"SPF pass, DMARC p=reject; {args.sessions} sessions, {args.per_conn}/connection, "
          f"<= {args.messages} messages and <= {args.seconds:.0f} s per row, best of "
          f"{args.rounds} rounds, loopback, plaintext")
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="mailmoat-bench-inbound-"))
    started = time.monotonic()
    try:
        cells, problems = _glue.run_async(run(args, work))
        alone: list[tuple[str, float]] = []
        if args.verify_seconds > 0:
            alone = verification_only(_glue.load_world(work), _glue.signed_message(
                _glue.load_world(work)), args.verify_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(cells, alone)
    print(f"(whole run {time.monotonic() - started:.0f} s)")
    if args.json is not None:
        _glue.write_json(args.json, cells, problems)
    return cells


if __name__ == "__main__":
    main()
