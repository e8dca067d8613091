"""The double ring (LoongTrain's double-ring attention): an inner ring of I ranks inside each node
and an outer ring of O nodes, I·O = G (``double-ring:IxO``).

Rank r = n·I + i is member i of node-group n (consecutive ranks: the inner ring stays inside a node
when I divides the node size). Tokens are the ring's zigzag layout over all G ranks, so the work
per (rank, step) is the ring's — only the order in which shards arrive, and the links they take,
change. At global step t = k·I + j (outer round k, inner step j) rank (n, i) holds the K/V of
owner ((n − k) mod O, (i − j) mod I): its call is the ring's for that owner (``Plan.pairs[r, s]``
is for owner (r − s) mod G, so s = (r − owner) mod G).

**Forward**, per round k:

- step j = 0: post the inner transfer of the held K/V to (n, i+1) (waited in this step) *and*
  the outer transfer of the same K/V — the one the round started with — to (n+1, i) (k < O−1),
  waited ``I − 1`` steps later, at the round's last step: it crosses the slow inter-node link while
  the whole inner round computes;
- steps 1 … I−2: inner transfers only;
- step I−1: no transfer posted; the outer one arrives; the next round starts with it.

**Backward**: K/V travel as in the forward, and each shard's dK/dV accumulator (fp32) one step
behind it, as in the ring: inside a round on the inner hop (steps 1 … I−1, with the K/V where both
go); between rounds the accumulator of the shard a rank held at the round's last step goes to the
rank that holds that shard at the next round's first step — (n+1, i+1), a "diagonal" hop posted at
the next round's start — and after the last round the same hop returns every complete dK/dV to its
owner (a last step without compute, like the ring's return).

The fast path does not apply (a message waited at a later step); the DES runs it. The runtime does
not run it (its messages are all waited in the step that posts them).

**Memory**: the ring's, plus the K/V buffer of the outer transfer in each direction (the round's
first K/V stays alive until its outer send completes, and the next one arrives), plus in the
backward one fp32 dK/dV buffer for the diagonal hand-off.
"""
from __future__ import annotations

import numpy as np

from ..program import KernelOp, MemoryOp, Messages, Program, Stage
from ..schedules import Plan
from ..units import InputError
from ..workload import Workload
from .base import NotApplicable, Strategy
from .ring import _accumulate_bytes, _merge_bytes

__all__ = ["DoubleRing", "build_double_ring"]


def build_double_ring(plan: Plan, workload: Workload, I: int, O: int, phase: str = "fwd", spec: str = "") -> Program:
    """The double-ring program for a zigzag ``plan`` of G = I·O ranks (see the module docstring)."""
    if phase not in ("fwd", "fwd+bwd"):
        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    G = plan.world_size
    n_tok = plan.tokens_per_rank
    shapes, ids = plan.call_shapes
    ranks = np.arange(G, dtype=np.int64)
    node, inner = ranks // I, ranks % I
    t = np.arange(G, dtype=np.int64)[:, None]
    k, j = t // I, t % I
    owner = ((node[None, :] - k) % O) * I + (inner[None, :] - j) % I        # [step, rank]
    sid = ids[ranks[None, :], (ranks[None, :] - owner) % G]
    q_rows, k_rows = shapes.q_rows[sid], shapes.k_rows[sid]
    kv_b = float(workload.shard_bytes(n_tok))
    dkv_b = float(workload.grad_shard_bytes(n_tok))
    src = ranks[None, :]
    in_dst = (node * I + (inner + 1) % I)[None, :]
    out_dst = (((node + 1) % O) * I + inner)[None, :]
    diag_dst = (((node + 1) % O) * I + (inner + 1) % I)[None, :]

    def ops(ph: str, a: int, b: int):
        kop = KernelOp(ph, shapes, sid[a:b], owner[a:b])
        if ph == "fwd":
            return (kop, MemoryOp("merge", _merge_bytes(workload, q_rows[a:b]), 6))
        return (kop, MemoryOp("accumulate", _accumulate_bytes(workload, q_rows[a:b], k_rows[a:b]), 3))

    stages: list[Stage] = []
    for ph in ("fwd", "bwd") if phase == "fwd+bwd" else ("fwd",):
        bwd = ph == "bwd"
        for kk in range(O):
            t0 = kk * I
            first = [Messages(src, in_dst, np.array([[kv_b]]), (("kv",),))]
            if kk < O - 1:
                first.append(Messages(src, out_dst, np.array([[kv_b]]), (("kv",),), wait_after=I - 1))
            if bwd and kk > 0:
                first.append(Messages(src, diag_dst, np.array([[dkv_b]]), (("dkv",),)))
            stages.append(Stage(ph, t0, 1, ops(ph, t0, t0 + 1), tuple(first), f"round {kk}: inner + outer"))
            if I > 2:
                pay, b = ((("kv", "dkv"),), kv_b + dkv_b) if bwd else ((("kv",),), kv_b)
                stages.append(Stage(ph, t0 + 1, I - 2, ops(ph, t0 + 1, t0 + I - 1),
                                    (Messages(src, in_dst, np.array([[b]]), pay),), f"round {kk}: inner"))
            last = (Messages(src, in_dst, np.array([[dkv_b]]), (("dkv",),)),) if bwd else ()
            stages.append(Stage(ph, t0 + I - 1, 1, ops(ph, t0 + I - 1, t0 + I), last,
                                f"round {kk}: last inner step"))
        if bwd:
            stages.append(Stage("bwd", G, 1, (), (Messages(src, diag_dst, np.array([[dkv_b]]), (("dkv",),)),),
                                "dK/dV return"))
    meta = {"layout": spec, "mask": str(plan.mask), "seq_len": plan.seq_len, "phase": phase,
            "tokens_per_rank": n_tok, "heads": workload.model.heads, "inner_ring": I, "outer_ring": O}
    return Program(G, stages, strategy=spec, meta=meta, plan=plan)


class DoubleRing(Strategy):
    """An inner ring of I consecutive ranks inside an outer ring of O groups (``double-ring:IxO``)."""

    def __init__(self, I: int, O: int):
        self.I, self.O = I, O
        self.spec = f"double-ring:{I}x{O}"

    def _check(self, world_size: int) -> None:
        if self.I * self.O != world_size:
            raise NotApplicable(f"{self.spec}: {self.I} × {self.O} = {self.I * self.O} ranks, but the world size is "
                                f"{world_size}; pick degrees whose product is {world_size}")
        if self.I < 2 or self.O < 2:
            raise NotApplicable(f"{self.spec}: with a ring of one the double ring is the plain ring; use zigzag")

    def plan(self, workload: Workload, world_size: int, mask) -> Plan:
        self._check(world_size)
        return Plan("zigzag", world_size, workload.seq_len, mask)

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        return build_double_ring(self.plan(workload, world_size, mask), workload, self.I, self.O, phase, self.spec)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        from ..metrics import ring_memory_bytes

        plan = self.plan(workload, world_size, mask)
        out = ring_memory_bytes(plan, workload, phase, double_buffer)
        extra = 2 * workload.shard_bytes(plan.tokens_per_rank)
        if phase == "fwd+bwd":
            extra += workload.grad_shard_bytes(plan.tokens_per_rank)
        out["ring_working_set_bytes"] += int(extra)
        out["peak_memory_bytes"] += int(extra)
        return out
