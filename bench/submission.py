"""Submission-to-queue throughput with DKIM signing: mailmoat vs the aiosmtpd + dkimpy glue
(issue #7; ``python -m bench.submission``).

The message: the ~10 KB multipart message of ``bench.dkim`` (From ``alice@example.com``),
submitted by an authenticated user over implicit TLS (TLS 1.3, ECDSA P-256; mailmoat's engine
offers AUTH only under TLS, so both sides use implicit TLS) with AUTH PLAIN, ``--sessions``
(20) concurrent sessions, ``--per-conn`` (100) messages per connection, each row bounded by
``--messages`` and ``--seconds``, ``--rounds`` interleaved rounds (best round kept: the machine
is shared). Rows, each server a child process:

* **mailmoat** -- the Gateway as ``mailmoat serve`` builds it (uvloop, spool fsync on, with
  its runtime: the ``accept`` group commit of the store rows before the 250, delivery held)
  with a submission listener per signer: none (accept-only, for reference), RSA-2048,
  Ed25519, dual (RSA + Ed25519, RFC 8463 §5). The signer repairs, checks From against the
  login, adds Date/Message-ID when missing and signs in a worker thread; then the Received
  field and the signed message are spooled (fsync) and queued;
* **glue** -- aiosmtpd 1.4 (uvloop, implicit TLS, AUTH checked with the same scrypt hash) whose
  DATA handler signs with dkimpy (``dkim.sign``, relaxed/relaxed, the same keys) and writes +
  fsyncs the signed message. It checks nothing else (no From check, no repair).

The bench user's scrypt cost is 2^4 on both sides (production: 2^14, ~50 ms per AUTH): AUTH
is not what is measured. Afterwards the stored messages' signatures are verified with dkimpy.
Also printed: the signing step alone, in this process (CPU per message: mailmoat's
``SubmissionSigner.prepare_sync`` vs ``dkim.sign``), and with ``--profile`` the top costs of
a short cProfile'd run of mailmoat (every thread, CPU time). Target (issue #7): >= 10x the
glue. Options as in ``bench.inbound``: ``--spool-only``, ``--workers N``, ``--dir``,
``--json``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import _glue
from bench.smtp_server import Server, free_port

VARIANTS = ("rsa", "ed25519", "dual")

LABEL = {"none": "no signing", "rsa": "RSA-2048", "ed25519": "Ed25519",
         "dual": "dual RSA+Ed25519"}


def ours_row(variant: str) -> str:
    return f"mailmoat {LABEL[variant]}"


def glue_row(variant: str) -> str:
    return f"glue aiosmtpd+dkimpy {LABEL[variant]}"


def signing_only(world: _glue.World, seconds: float) -> list[tuple[str, float, float]]:
    """(variant, ours µs, dkimpy µs): CPU per message of the signing step alone."""
    import dkim

    from mailmoat.clock import SYSTEM_CLOCK
    from mailmoat.gateway.outbound_sign import SubmissionSigner
    from mailmoat.gateway.submit_api import DKIMKey
    from mailmoat.gateway.users import User

    message = _glue.message()
    user = User(name=_glue.USER, password_hash="x", addresses=(f"*@{_glue.DOMAIN}",))
    keys = {w: DKIMKey(domain=_glue.DOMAIN, selector=_glue.SELECTORS[w], key=world.key(w))
            for w in ("rsa", "ed25519")}
    out = []
    for variant in VARIANTS:
        chosen = [keys["rsa"], keys["ed25519"]] if variant == "dual" else [keys[variant]]
        signer = SubmissionSigner(keys=chosen, hostname=_glue.MX_HOST, clock=SYSTEM_CLOCK)
        glue_keys = _glue._glue_keys(world, variant)

        def ours(signer: SubmissionSigner = signer) -> object:
            return signer.prepare_sync(message, user=user)

        def theirs(glue_keys: list[tuple[bytes, bytes, bytes]] = glue_keys) -> object:
            return [dkim.sign(message, s, _glue.DOMAIN.encode(), k,
                              canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=a)
                    for s, k, a in glue_keys]

        out.append((variant, _cpu_per_call(ours, seconds), _cpu_per_call(theirs, seconds)))
    return out


def _cpu_per_call(fn: Callable[[], object], seconds: float) -> float:
    fn()
    n, start = 0, time.process_time()
    wall = time.monotonic() + 4 * seconds
    while n < 100_000:
        fn()
        n += 1
        if time.process_time() - start >= seconds or time.monotonic() >= wall:
            break
    return (time.process_time() - start) / n * 1e6


def check_signed(work: Path, spool_dir: Path) -> list[str]:
    """Every sampled stored message's DKIM signatures must verify (dkimpy); (problems)."""
    import dkim

    dnsfunc = _glue.load_world(work).dnsfunc()
    problems: list[str] = []
    seen: set[bytes] = set()
    samples = [_glue.read_spool_record(p)[0] for p in _glue.spool_records(spool_dir)[-60:]]
    for variant in VARIANTS:
        directory = work / f"glue-{variant}"
        files = sorted(directory.iterdir()) if directory.is_dir() else []
        samples += [f.read_bytes() for f in files[-3:]]
    for data in samples:
        d = dkim.DKIM(data)
        count = sum(1 for name, _ in dkim.rfc822_parse(data)[0]
                    if name.lower() == b"dkim-signature")
        for index in range(count):
            if not d.verify(idx=index, dnsfunc=dnsfunc):
                problems.append(f"signature {index} does not verify: {data[:300]!r}")
            seen.add(d.signature_fields.get(b"a", b"?"))
    if samples and not {b"rsa-sha256", b"ed25519-sha256"} <= seen:
        problems.append(f"algorithms seen in the stored messages: {sorted(seen)}")
    return problems[:5]


async def run(args: argparse.Namespace,
              work: Path) -> tuple[list[_glue.Cell], str, list[str]]:
    from mailmoat.gateway.config import load_config
    from mailmoat.net.tls import generate_self_signed

    _glue.make_world(work)
    message = _glue.message()
    cert, key = work / "cert.pem", work / "key.pem"
    generate_self_signed(cert, key, [_glue.MX_HOST, "127.0.0.1"])
    variants = ["none", *VARIANTS]
    ports = {v: free_port() for v in variants}
    config = _glue.mailmoat_config(
        work / "mailmoat", {v: (p, "implicit-tls", "submission") for v, p in ports.items()},
        cert=cert, key=key)
    servers: list[Server] = []
    rows: list[tuple[str, Server, int]] = []
    rounds: list[list[_glue.Cell]] = []
    traffic = _glue.Traffic.make(message, mail_from=_glue.SENDER, rcpt=_glue.REMOTE_RCPT,
                                 per_conn=args.per_conn, auth=(_glue.USER, _glue.PASSWORD),
                                 tls=_glue.client_tls())
    try:
        ours, info = _glue.start_child("mailmoat", work, {
            "config": str(config), "rows": {str(p): v for v, p in ports.items()},
            "runtime": not args.spool_only, "gc_freeze": args.gc_freeze,
            "workers": args.workers}, "mailmoat")
        servers.append(ours)
        runtime = ("with its runtime (accept: store rows group-committed before the 250; "
                   "delivery held)" if info.get("runtime") else "spool only (no store rows)")
        print(f"mailmoat: {runtime}")
        glue, _ = _glue.start_child("glue", work, {
            "cert": str(cert), "key": str(key), "ports": {v: v for v in VARIANTS}}, "glue")
        servers.append(glue)
        for variant in variants:
            if variant in ours.ports:
                rows.append((ours_row(variant), ours, ours.ports[variant]))
            if variant in glue.ports:
                rows.append((glue_row(variant), glue, glue.ports[variant]))
        rounds = await _glue.run_rounds(
            rows, traffic, rounds=args.rounds, sessions=args.sessions, messages=args.messages,
            seconds=args.seconds, warmup=args.warmup, width=36)
    finally:
        _glue.stop_all(servers)
    spool_dir = load_config(config).spool_dir
    problems = check_signed(work, spool_dir)
    for problem in problems:
        print("PROBLEM:", problem)
    profile = ""
    if args.profile:
        profile = await profile_ours(args, work, config, ports, traffic)
    return _glue.best_cells(rounds), profile, problems


async def profile_ours(args: argparse.Namespace, work: Path, config: Path,
                       ports: dict[str, int], traffic: _glue.Traffic) -> str:
    """A short cProfile'd run of mailmoat on the ``--profile`` variant; the top costs."""
    return await _glue.profile_child(
        work, {"config": str(config), "rows": {str(p): v for v, p in ports.items()},
               "runtime": not args.spool_only}, args.profile, LABEL[args.profile], traffic,
        sessions=args.sessions, messages=args.messages, seconds=min(args.seconds, 3.0),
        top=args.profile_top, spool=load_spool_dir(config))


def load_spool_dir(config: Path) -> Path:
    from mailmoat.gateway.config import load_config

    return load_config(config).spool_dir


def report(cells: list[_glue.Cell], signing: list[tuple[str, float, float]],
           profile: str) -> None:
    _glue.print_cells(cells)
    by = {c.row: c for c in cells}
    _glue.ratio_head()
    for variant in VARIANTS:
        _glue.ratio_line(f"ours / glue, {LABEL[variant]} >= 10x", by.get(ours_row(variant)),
                         by.get(glue_row(variant)), 10.0)
    if signing:
        print(f"\n{'signing alone, CPU µs/message (this process)':<46}{'ours':>8}{'dkimpy':>9}"
              f"{'ratio':>8}")
        for variant, ours, theirs in signing:
            print(f"{LABEL[variant]:<46}{ours:>8.0f}{theirs:>9.0f}{theirs / ours:>7.1f}x")
    print("\nAll rows durable (fsync before the 250). The load generator runs in this process, "
          "on the same cores as the servers.")
    if profile:
        print(profile)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    _glue.common_options(p, per_conn=100)
    p.add_argument("--signing-seconds", type=float, default=0.5,
                   help="CPU seconds per signing-alone measurement (0: skip)")
    p.add_argument("--profile", choices=VARIANTS, help="also a cProfile'd run of this variant")
    return p


def main(argv: list[str] | None = None) -> list[_glue.Cell]:
    args = parser().parse_args(argv)
    print(f"submission benchmark (issue #7): {len(_glue.message())} B messages, implicit TLS + "
          f"AUTH PLAIN, {args.sessions} sessions, {args.per_conn}/connection, <= {args.messages}"
          f" messages and <= {args.seconds:.0f} s per row, best of {args.rounds} rounds, loopback")
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="mailmoat-bench-submission-"))
    started = time.monotonic()
    profile = ""
    try:
        cells, profile, problems = _glue.run_async(run(args, work))
        signing: list[Any] = []
        if args.signing_seconds > 0:
            signing = signing_only(_glue.load_world(work), args.signing_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(cells, signing, profile)
    print(f"(whole run {time.monotonic() - started:.0f} s)")
    if args.json is not None:
        _glue.write_json(args.json, cells, problems)
    return cells


if __name__ == "__main__":
    main()
