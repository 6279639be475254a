"""Header analysis throughput: mailmoat vs mail-parser's Received parsing (issue #8 benchmark).

    python -m bench.headers [--seconds 3]

Corpus: every message with a Received field in ../shared/conformance (spamscope mails,
parsedmarc samples, dkimpy and authheaders messages) plus tests/vectors/received/*.eml.

Rows (messages per CPU second, each side on the same bytes; medians of 7 interleaved rounds):

* "full message": mailmoat reads the header section, parses every Received stamp, decides the
  trust boundary and the verdict, and summarises Authentication-Results / DKIM / ARC
  (``analyse_headers(parse_headers(raw))``); mail-parser parses the message and its Received
  chain (``mailparser.parse_from_bytes(raw).received``), as a user of that library would.
* "header section only": both are given only the header section, so that mail-parser's MIME
  body work does not count against it.
* "Received only": header section only, and mailmoat only parses the Received stamps
  (``parse_received`` on each), like for like with mail-parser's ``.received``.


Target (issue #8): mailmoat >= 5x mail-parser.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mailmoat.analysis import analyse_headers, parse_received
from mailmoat.message import find_header_end, parse_headers

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAILMOAT_SHARED", ROOT.parent / "shared")) / "conformance"


def corpus() -> list[bytes]:
    paths = [p for sub in ("spamscope-mail-parser", "parsedmarc-samples", "dkimpy",
                           "authheaders") for p in sorted((SHARED / sub).rglob("*")) if p.is_file()]
    paths += sorted((ROOT / "tests" / "vectors" / "received").glob("*.eml"))
    messages = []
    for path in paths:
        raw = path.read_bytes()
        end = find_header_end(raw)
        head = raw if end is None else raw[:end]
        if b"\nreceived:" in b"\n" + head.lower():
            messages.append(raw)
    return messages


def ours(raw: bytes) -> object:
    return analyse_headers(parse_headers(raw))


def ours_received_only(raw: bytes) -> object:
    return [parse_received(f.value) for f in parse_headers(raw).get_all(b"received")]


def theirs(raw: bytes) -> object:
    import mailparser

    return mailparser.parse_from_bytes(raw).received


def _pass_time(function: Callable[[bytes], object], messages: list[bytes], passes: int) -> float:
    """CPU seconds per corpus pass; the cyclic GC is collected before and paused during the
    timed passes (as ``timeit`` does), so one side's garbage is not collected on the other's
    time."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(passes):
            for raw in messages:
                function(raw)
        return (time.process_time() - start) / passes
    finally:
        gc.enable()


def compare(
    messages: list[bytes], seconds: float, rounds: int = 7, mine: Callable[[bytes], object] = ours
) -> tuple[float, float, float]:
    """(ours msg/s, theirs msg/s, median ratio), measured in interleaved rounds.

    CPU time of this process (``time.process_time``), so that other work on a shared machine
    counts against neither side; ours and theirs alternate, round by round, so that a change
    in the machine's load during the run hits both alike. Medians over the rounds.
    """
    for raw in messages:  # warm-up (imports, the public suffix list)
        mine(raw)
        theirs(raw)
    per_side = seconds / rounds / 2
    ours_passes = max(1, int(per_side / max(_pass_time(mine, messages, 1), 1e-6)))
    theirs_passes = max(1, int(per_side / max(_pass_time(theirs, messages, 1), 1e-6)))
    a_times, b_times, ratios = [], [], []
    for _ in range(rounds):
        a = _pass_time(mine, messages, ours_passes)
        b = _pass_time(theirs, messages, theirs_passes)
        a_times.append(a)
        b_times.append(b)
        ratios.append(b / a)
    n = len(messages)
    return n / statistics.median(a_times), n / statistics.median(b_times), statistics.median(
        ratios
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="CPU seconds per row (both sides together)")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # mail-parser logs every defect it meets
    try:
        import mailparser  # noqa: F401
    except ModuleNotFoundError:
        raise SystemExit("mail-parser is not installed: pip install mail-parser") from None
    full = corpus()
    heads = []
    for raw in full:
        end = find_header_end(raw)
        heads.append(raw if end is None else raw[:end])
    size = sum(len(m) for m in full)
    stamps = sum(len(parse_headers(m).get_all("received")) for m in full)
    print(f"corpus: {len(full)} messages, {size / 1e6:.2f} MB, {stamps} Received fields")
    print(f"{'input':<22}{'mailmoat msg/s':>16}{'mail-parser msg/s':>20}{'ratio':>9}")
    rows: list[tuple[str, list[bytes], Callable[[bytes], object]]] = [
        ("full message", full, ours),
        ("header section only", heads, ours),
        ("  Received only", heads, ours_received_only),
    ]
    for label, data, mine in rows:
        a, b, ratio = compare(data, args.seconds, mine=mine)
        print(f"{label:<22}{a:>16,.0f}{b:>20,.0f}{ratio:>8.1f}x")


if __name__ == "__main__":
    main()
