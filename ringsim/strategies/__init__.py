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

__all__ = ["parse_strategy", "program_from_meta", "Strategy", "NotApplicable", "Ring", "build_ring", "STRATEGY_NAMES", "IMPLEMENTATIONS"]

STRATEGY_NAMES = LAYOUTS


def parse_strategy(spec: str, implementation: str = "ringsim", documents=None):
    """The strategy a spec names (see the module docstring); ``implementation`` fixes the memory
    work between kernels of the ring (``ringsim``, ``ring-flash-attn``); ``documents`` (a list of
    document lengths) packs the sequence, which also allows the ``zigzag-doc`` and ``balanced[:K]``
    layouts."""
    s = str(spec).strip().lower()
    if implementation not in IMPLEMENTATIONS:
        raise InputError(f"unknown implementation {implementation!r}; use one of {', '.join(IMPLEMENTATIONS)}")
    if s in LAYOUTS:
        return Ring(s, implementation, documents)
    if s.split(":")[0] in ("zigzag-doc", "balanced"):
        if documents is None:
            raise InputError(f"layout {spec!r} places packed documents; give --documents (e.g. 4K,60K,1000)")
        from ..documents import parse_layout

        parse_layout(s)
        return Ring(s, implementation, documents)
    raise InputError(f"unknown strategy {spec!r}; use one of {', '.join(STRATEGY_NAMES)}")


def program_from_meta(meta: dict, world_size: int, workload, phase: str | None = None):
    """The program a run recorded in ``meta`` executed (its ``strategy`` or ``schedule``, ``mask``,
    ``phase``, ``documents``) for ``workload`` — what the calibration, validation and the Kineto
    import rebuild from a trace's metadata."""
    spec = meta.get("strategy") or meta.get("schedule")
    if not spec:
        raise InputError("the run's metadata names no strategy or schedule")
    docs = meta.get("documents")
    return parse_strategy(str(spec), str(meta.get("implementation", "ringsim")), docs).build(
        workload, world_size, meta.get("mask", "causal"), phase or str(meta.get("phase", "fwd")))
