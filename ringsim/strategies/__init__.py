"""Context-parallel strategies: builders of per-rank programs (DESIGN.md §3.2a).

A strategy turns (workload, world size, mask, phase) into a :class:`~ringsim.program.Program`.
Every engine, the runtime and every analysis read that program; adding a strategy is one builder
module plus its tests, registered in :func:`parse_strategy`.

Specs: a bare layout name (``contiguous``, ``striped``, ``zigzag``) is the ring with that layout.
"""
from __future__ import annotations

from ..units import InputError
from .base import NotApplicable, Strategy
from .ring import IMPLEMENTATIONS, LAYOUTS, Ring, build_ring

__all__ = ["parse_strategy", "Strategy", "NotApplicable", "Ring", "build_ring", "STRATEGY_NAMES", "IMPLEMENTATIONS"]

STRATEGY_NAMES = LAYOUTS


def parse_strategy(spec: str, implementation: str = "ringsim"):
    """The strategy a spec names (see the module docstring); ``implementation`` fixes the memory
    work between kernels of the ring (``ringsim``, ``ring-flash-attn``)."""
    s = str(spec).strip().lower()
    if implementation not in IMPLEMENTATIONS:
        raise InputError(f"unknown implementation {implementation!r}; use one of {', '.join(IMPLEMENTATIONS)}")
    if s in LAYOUTS:
        return Ring(s, implementation)
    raise InputError(f"unknown strategy {spec!r}; use one of {', '.join(STRATEGY_NAMES)}")
