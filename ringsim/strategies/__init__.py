"""Context-parallel strategies: builders of per-rank programs (DESIGN.md §3.2a).

A strategy turns (workload, world size, mask, phase) into a :class:`~ringsim.program.Program`.
Every engine, the runtime and every analysis read that program; adding a strategy is one builder
module plus its tests, registered in :func:`parse_strategy`.

Specs: a bare layout name (``contiguous``, ``striped``, ``zigzag``) is the ring with that layout;
``allgather`` / ``allgather:tree`` the all-gather of K/V (ring or recursive-doubling collective);
``ulysses`` DeepSpeed-Ulysses over every rank; ``usp:UxR`` (``usp:UxR:ring-inner``) Ulysses of
degree U inside a ring of degree R; ``double-ring:IxO`` an inner ring of I ranks inside an outer
ring of O; ``pass-kv:P`` / ``pass-q:P`` prefill with P cached tokens (``P`` may come from
``--cached-tokens``: pass ``cached_tokens``).
"""
from __future__ import annotations

from ..units import InputError
from .allgather import AllGather, build_allgather
from .base import NotApplicable, Strategy
from .double_ring import DoubleRing
from .pass_q import PassKV, PassQ
from .ring import IMPLEMENTATIONS, LAYOUTS, Ring, build_ring
from .ulysses import Ulysses
from .usp import USP, parse_degrees

__all__ = ["parse_strategy", "program_from_meta", "Strategy", "NotApplicable", "Ring", "build_ring", "AllGather",
           "build_allgather", "Ulysses", "USP", "DoubleRing", "PassKV", "PassQ", "STRATEGY_NAMES", "IMPLEMENTATIONS"]

STRATEGY_NAMES = LAYOUTS + ("allgather", "allgather:tree", "ulysses", "usp:UxR[:ring-inner]", "double-ring:IxO",
                            "pass-kv:P", "pass-q:P")


def parse_strategy(spec: str, implementation: str = "ringsim", documents=None, *, cached_tokens: int | None = None):
    """The strategy a spec names (see the module docstring); ``implementation`` fixes the memory
    work between kernels of the ring (``ringsim``, ``ring-flash-attn``); ``documents`` (a list of
    document lengths) packs the sequence, which also allows the ``zigzag-doc`` and ``balanced[:K]``
    layouts (ring layouts only); ``cached_tokens`` completes a bare ``pass-kv`` / ``pass-q``."""
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
    if documents is not None:
        raise InputError(f"--documents places packed documents on a ring layout (contiguous, striped, zigzag, "
                         f"zigzag-doc, balanced); {spec!r} is not one")
    name, _, arg = s.partition(":")
    if name == "allgather":
        return AllGather(arg or "ring")
    if s == "ulysses":
        return Ulysses()
    if name == "usp":
        degrees, _, order = arg.partition(":")
        return USP(*parse_degrees(degrees, "usp", "usp:4x2"), order)
    if name == "double-ring":
        return DoubleRing(*parse_degrees(arg, "double-ring", "double-ring:8x4"))
    if name in ("pass-kv", "pass-q"):
        from ..units import parse_seq_len

        P = (0 if arg.strip() == "0" else parse_seq_len(arg, f"{name} cached tokens")) if arg else cached_tokens
        return (PassQ if name == "pass-q" else PassKV)(P)
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
