"""What a strategy is: a builder of programs, with its memory footprint and its limits."""
from __future__ import annotations

from ..units import InputError

__all__ = ["Strategy", "NotApplicable"]


class NotApplicable(InputError):
    """The strategy cannot run this configuration (heads not divisible by a degree, a world size
    that does not factor, memory that does not fit): the message is the reason, shown in place of
    results when strategies are compared."""


class Strategy:
    """Interface of a context-parallel strategy.

    ``spec`` is the string that names it (``zigzag``, ``usp:4x2``, …). :meth:`build` returns the
    program of one attention layer; :meth:`plan` the token partition of the queries (what the
    runtime shards its inputs by); :meth:`memory` the per-rank memory of the configuration. Any of
    them raises :class:`NotApplicable` for a configuration the strategy cannot run."""

    spec = "?"

    def plan(self, workload, world_size: int, mask):  # pragma: no cover - interface
        raise NotImplementedError

    def build(self, workload, world_size: int, mask, phase: str):  # pragma: no cover - interface
        raise NotImplementedError

    def memory(self, workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        """Per-rank bytes: ``ring_working_set_bytes`` (what one attention layer's run holds at its
        peak besides the K/V of the rank's tokens), ``kv_shard_per_gpu_bytes`` and
        ``peak_memory_bytes`` (their sum)."""  # pragma: no cover - interface
        raise NotImplementedError
