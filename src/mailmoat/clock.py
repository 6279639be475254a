"""Injectable clocks (layer L0, stdlib only).

Code in layers L0-L2 never calls ``time.time()`` itself (ARCHITECTURE.md rule 6): it takes a
:class:`Clock`, so tests and ``--now`` can fix the time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Wall time (seconds since the epoch) and a monotonic timer."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(slots=True, kw_only=True)
class FixedClock:
    """A clock that only moves when told to (tests, ``--now``)."""

    wall: float = 0.0
    mono: float = field(default=0.0)

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


SYSTEM_CLOCK: Clock = SystemClock()
