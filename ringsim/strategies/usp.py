"""USP (unified sequence parallelism, Fang & Zhao 2024): Ulysses of degree U inside a ring of
degree R, U·R = G (``usp:UxR``).

The G ranks form R Ulysses groups of U ranks. An all-to-all inside each group gives member u the
group's tokens on its H/U query heads; the R groups then run a ring (zigzag over the R groups, so
the causal work stays balanced), member u of group g passing its K/V to member u of group g+1 —
U independent rings, one per block of heads, each of R ranks; a last all-to-all returns the
outputs. The program is :func:`~ringsim.strategies.ulysses.build_head_sharded` with R > 1 (see
there for the messages, the K/V-head replication and the memory); ``usp:Gx1`` is Ulysses and
``usp:1xG`` the zigzag ring.

**Which one spans the node.** ``usp:UxR``: a Ulysses group is U *consecutive* ranks — with ranks
numbered node by node, the all-to-alls stay inside a node when U divides the node size, and the
ring's hops (rank x → x+U) cross nodes. This is what USP recommends: the all-to-all moves about
the activations' size per layer and wants NVLink; the ring's transfers hide behind compute.
``usp:UxR:ring-inner`` numbers the other way (member u of group g is rank u·R + g): the ring's
hops are consecutive ranks (inside a node when R divides it) and the all-to-alls cross nodes.
"""
from __future__ import annotations

import re

from ..program import Program
from ..schedules import Plan, parse_mask
from ..units import InputError
from ..workload import Workload
from .base import NotApplicable, Strategy
from .ulysses import build_head_sharded, check_heads, group_plan, head_sharded_memory

__all__ = ["USP", "parse_degrees"]

ORDERS = ("", "ring-inner")


def parse_degrees(arg: str, name: str, example: str) -> tuple[int, int]:
    """``"4x2"`` → (4, 2); an InputError naming the spec's form otherwise."""
    mt = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", arg or "")
    if not mt or int(mt.group(1)) < 1 or int(mt.group(2)) < 1:
        raise InputError(f"{name} needs two positive degrees, e.g. {example}; got {arg!r}")
    return int(mt.group(1)), int(mt.group(2))


class USP(Strategy):
    """Ulysses of degree U inside a ring of degree R (``usp:UxR``, ``usp:UxR:ring-inner``)."""

    def __init__(self, U: int, R: int, order: str = ""):
        if order not in ORDERS:
            raise InputError(f"unknown usp order {order!r}; write usp:UxR or usp:UxR:ring-inner")
        self.U, self.R, self.ring_inner = U, R, order == "ring-inner"
        self.spec = f"usp:{U}x{R}" + (":ring-inner" if self.ring_inner else "")

    def _check(self, workload: Workload, world_size: int) -> None:
        if self.U * self.R != world_size:
            raise NotApplicable(f"{self.spec}: {self.U} × {self.R} = {self.U * self.R} ranks, but the world size is "
                                f"{world_size}; pick degrees whose product is {world_size}")
        check_heads(workload, self.U, self.spec)

    def plan(self, workload: Workload, world_size: int, mask) -> Plan:
        return self.build(workload, world_size, mask, "fwd").plan

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        self._check(workload, world_size)
        return build_head_sharded(workload, self.U, self.R, parse_mask(mask), phase, self.spec, self.ring_inner)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        self._check(workload, world_size)
        return head_sharded_memory(workload, self.U, self.R, phase, double_buffer)


__all__ += ["group_plan"]
