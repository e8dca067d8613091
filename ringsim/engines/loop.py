"""The event loop of the optimised engines: a heap of timed callbacks.

An entry is ``(time_s, seq, callback, arg)``: at ``time_s`` the loop sets ``now`` and calls
``callback(arg)``. Entries due at the same instant run in the order they were scheduled (``seq``,
from one counter), which is what makes runs deterministic. Times are absolute, so an event lands
exactly on the time it was computed for (no ``now + delay`` rounding).

This is what simpy's ``Environment`` does underneath, without the event objects, processes and
condition checks the optimised DES does not need; the reference engine
(:mod:`ringsim.engines.reference`) runs on simpy itself, so the two engines share no event code
and cross-check each other. Nothing here touches simpy's private state.
"""
from __future__ import annotations

from heapq import heappop, heappush
from itertools import count

__all__ = ["EventLoop"]


class EventLoop:
    """A deterministic discrete-event loop (see the module docstring)."""

    __slots__ = ("now", "queue", "seq")

    def __init__(self) -> None:
        self.now = 0.0
        self.queue: list = []
        self.seq = count()

    def at(self, time_s: float, callback, arg=None) -> None:
        """Run ``callback(arg)`` at the absolute time ``time_s`` (≥ now)."""
        heappush(self.queue, (time_s, next(self.seq), callback, arg))

    def reserve(self) -> int:
        """A sequence number taken now for an entry pushed later with :meth:`at_reserved` (it then
        runs where an entry scheduled now would have)."""
        return next(self.seq)

    def at_reserved(self, time_s: float, seq: int, callback, arg=None) -> None:
        heappush(self.queue, (time_s, seq, callback, arg))

    def run(self) -> None:
        """Process entries until none is left."""
        queue = self.queue
        while queue:
            t, _, callback, arg = heappop(queue)
            self.now = t
            callback(arg)
