"""Context-parallel strategies: builders of per-rank programs (DESIGN.md §3.2a).

A strategy turns (workload, world size, mask, phase) into a :class:`~ringsim.program.Program`.
Every engine, the runtime and every analysis read that program; adding a strategy is one builder
module plus its tests, registered in :func:`parse_strategy`.

Specs: a bare layout name (``contiguous``, ``striped``, ``zigzag``) is the ring with that layout;
``allgather`` / ``allgather:tree`` the all-gather of K/V (ring or recursive-doubling collective);
``ulysses`` DeepSpeed-Ulysses over every rank; ``usp:UxR`` (``usp:UxR:ring-inner``) Ulysses of
degree U inside a ring of degree R.
"""
from __future__ import annotations

from ..units import InputError
from .allgather import AllGather, build_allgather
from .base import NotApplicable, Strategy
from .ring import LAYOUTS, Ring, build_ring
from .ulysses import Ulysses
from .usp import USP, parse_degrees

__all__ = ["parse_strategy", "Strategy", "NotApplicable", "Ring", "build_ring", "AllGather", "build_allgather",
           "Ulysses", "USP", "STRATEGY_NAMES"]

STRATEGY_NAMES = LAYOUTS + ("allgather", "allgather:tree", "ulysses", "usp:UxR[:ring-inner]")


def parse_strategy(spec: str):
    """The strategy a spec names (see the module docstring)."""
    s = str(spec).strip().lower()
    if s in LAYOUTS:
        return Ring(s)
    name, _, arg = s.partition(":")
    if name == "allgather":
        return AllGather(arg or "ring")
    if s == "ulysses":
        return Ulysses()
    if name == "usp":
        degrees, _, order = arg.partition(":")
        return USP(*parse_degrees(degrees, "usp", "usp:4x2"), order)
    raise InputError(f"unknown strategy {spec!r}; use one of {', '.join(STRATEGY_NAMES)}")
