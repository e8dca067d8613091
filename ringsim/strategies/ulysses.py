"""Ulysses (DeepSpeed-Ulysses): all-to-all from sequence to head sharding, local attention on a
share of the heads over the whole sequence, all-to-all back.

Each of G = U ranks owns T/U contiguous tokens with every head. An all-to-all gives member u the
queries, keys and values of *every* token for its block of H/U query heads; it runs ordinary
attention over the whole sequence on those heads (one causal call of T × T rows, ``heads`` = H/U,
priced and counted as H/U of the model's heads); a second all-to-all returns each token's output
to its owner. No K/V travels during the attention, so nothing has to hide behind compute: the
cost is four (forward: q, k, v, out) or three more (backward: dout, then dq, dk, dv) all-to-alls
of about the activations' size, and the degree is capped by the heads.

:func:`build_head_sharded` is the general builder: U-rank Ulysses groups whose group-level work
is a ring of R groups (:func:`~ringsim.strategies.ring.ring_stages` with each member on its own
heads). R = 1 is Ulysses; ``usp:UxR`` (:mod:`.usp`) uses R > 1.

**The program** (per phase, ``HeadGroups`` on the program; pieces as in
:class:`~ringsim.program.HeadGroups`):

- forward: one all-to-all step (payloads ``heads:q``, ``heads:kv``), the ring of R groups on the
  head layout (R = 1: one step, one call, its merge), one all-to-all step (``seq:out``,
  ``seq:lse``: the runtime returns every token's LSE, as the ring does — 4 bytes per head and token
  against 2·d_v in bf16 for the output);
- backward: one all-to-all step (``heads:dout``: the forward's head-layout queries, K/V, output
  and LSE are kept, as a Ulysses layer's autograd keeps them), the ring's backward on the head
  layout, one all-to-all step (``seq:dq``, ``seq:dkv``, in the input dtype).

**An all-to-all is one step in which every member sends one message to every other member** (U−1
per rank, all posted in one batch): that is what NCCL's all-to-all does (one group of sends and
receives), and in the DES the U−1 flows of a rank share its links max-min fairly, so the
collective's time is its bytes through the busiest link — the fast path refuses such a step (two
messages of one step on one link) and the DES runs it. Pairwise exchange steps (U−1 rounds, one
peer each) would serialise what the hardware does in parallel and add U−2 latencies.

**K/V heads.** Member u's query heads use K/V heads ``[u·H_kv/U, (u+1)·H_kv/U)`` when U ≤ H_kv;
when U > H_kv each K/V head is *replicated* on the U/H_kv members whose query heads share it
(U must then be a multiple of H_kv): every member still receives one K/V head of every token, so
the ``heads:kv`` bytes per rank stay at one head's worth — n·2·d·bytes per peer — instead of
shrinking to H_kv/U of a head, and a replicated head's dK/dV contributions are summed when they
return. An MLA model's latent is shared by all heads: every member receives all of it.

**Memory** (:func:`head_sharded_memory`): the sequence-layout queries and output, the head-layout
queries, K/V (the group's tokens, the member's K/V heads: larger than the rank's own K/V when heads
are replicated), output and fp32 accumulators; the ring's extra K/V buffers when R > 1; in the
backward the head-layout dout, fp32 dQ and travelling dK/dV.
"""
from __future__ import annotations

from math import gcd

import numpy as np

from ..program import HeadGroups, Messages, Program, Stage
from ..schedules import Plan, parse_mask
from ..units import InputError
from ..workload import GRAD_BYTES_PER_VALUE, Workload
from .base import NotApplicable, Strategy
from .ring import ring_stages

__all__ = ["Ulysses", "build_head_sharded", "check_heads", "head_sharded_memory", "kv_values_per_member"]

MAX_MASK_ELEMENTS = 2e8  # an explicit mask larger than this per call is refused (sliding windows)


def check_heads(workload: Workload, U: int, spec: str) -> None:
    """Raise :class:`NotApplicable` when a Ulysses degree U cannot shard the model's heads."""
    m = workload.model
    if m.heads % U:
        raise NotApplicable(f"{spec}: Ulysses degree {U} does not divide the {m.heads} query heads of {m.name}; "
                            f"use a degree that divides {m.heads} (or a ring)")
    if m.attention != "mla" and U > m.kv_heads and U % m.kv_heads:
        raise NotApplicable(f"{spec}: Ulysses degree {U} is neither a divisor nor a multiple of the {m.kv_heads} "
                            f"K/V heads of {m.name}, so a member's query heads would straddle two K/V heads")


def kv_values_per_member(workload: Workload, U: int) -> int:
    """K/V values per token a member holds in the head layout (see the module docstring)."""
    m = workload.model
    if m.attention == "mla":
        return m.kv_values_per_token_layer()
    return max(m.kv_heads // U, 1) * (m.head_dim + m.v_dim)


def _layout_unit(U: int, R: int) -> int:
    unit = 2 * R if R > 1 else 1
    G = U * R
    return unit * G // gcd(unit, G)


def group_plan(workload: Workload, U: int, R: int, mask, name: str) -> tuple[Plan, Plan, np.ndarray]:
    """``(ring plan over R groups, query plan over G ranks, members [R, U])`` for Ulysses groups of
    consecutive ranks: group g's tokens are the ring layout's (zigzag over R; the whole sequence
    when R = 1), split into U consecutive pieces, piece u to member u."""
    T, G = workload.seq_len, U * R
    unit = _layout_unit(U, R)
    if T % unit:
        lower, upper = (T // unit) * unit, (T // unit + 1) * unit
        raise InputError(f"sequence length {T} is not divisible by {unit} for {name} (pieces of T/{G} tokens"
                         + (f", zigzag over {R} groups" if R > 1 else "") + f"); nearest valid lengths: "
                         + (f"{lower} or {upper}" if lower > 0 else f"{upper}"))
    ring = Plan("zigzag" if R > 1 else "contiguous", R, T, mask)
    n = T // G
    tokens = [None] * G
    members = np.arange(G, dtype=np.int64).reshape(R, U)
    for g in range(R):
        t = ring.tokens(g)
        for u in range(U):
            tokens[members[g, u]] = t[u * n:(u + 1) * n]
    return ring, Plan.from_tokens(G, T, tokens, mask, name=name), members


def _all_to_all(groups: np.ndarray, nbytes: float, payloads: tuple) -> Messages:
    """One step in which every member of every group sends one message to every other member."""
    R, U = groups.shape
    j = np.arange(1, U, dtype=np.int64)
    u = np.arange(U, dtype=np.int64)
    src = np.repeat(groups, U - 1, axis=1).reshape(1, -1)
    dst = groups[:, (u[:, None] + j[None, :]) % U].reshape(1, -1)
    return Messages(src, dst, np.array([[nbytes]]), (payloads,))


def build_head_sharded(workload: Workload, U: int, R: int, mask, phase: str, spec: str,
                       ring_inner: bool = False) -> Program:
    """Ulysses groups of U ranks around a ring of R groups (see the module docstring). Groups are
    consecutive ranks (``members[g, u] = g·U + u``: the all-to-all inside a node when U divides
    the node); ``ring_inner`` numbers the other way (``u·R + g``: the ring inside a node)."""
    if phase not in ("fwd", "fwd+bwd"):
        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    check_heads(workload, U, spec)
    mk = parse_mask(mask)
    T, G = workload.seq_len, U * R
    if mk.kind == "sliding" and (T / R) ** 2 > MAX_MASK_ELEMENTS and T / R > mk.window:
        raise NotApplicable(f"{spec}: a sliding window over {T // R} tokens per call needs an explicit mask of "
                            f"{(T / R) ** 2:.2g} elements; use a ring layout (or more ring ranks)")
    ring, plan, members = group_plan(workload, U, R, mk, spec)
    if ring_inner:  # member u of group g is rank u·R + g: relabel the query partition accordingly
        relabel = np.arange(G, dtype=np.int64).reshape(U, R).T
        where = np.empty(G, dtype=np.int64)
        where[relabel.reshape(-1)] = np.arange(G)
        plan = Plan.from_tokens(G, T, [plan.tokens(int(where[x])) for x in range(G)], mk, name=spec)
        members = relabel
    m, B, bpv = workload.model, workload.batch, workload.bytes_per_value
    n, hU = T // G, m.heads // U
    kvv = kv_values_per_member(workload, U)
    q_b = float(B * n * hU * m.head_dim * bpv)
    kv_b = float(B * n * kvv * bpv)
    out_b = float(B * n * hU * m.v_dim * bpv)
    lse_b = float(B * n * hU * 4)
    stages: list[Stage] = []

    def phase_stages(ph: str):
        f = 0
        if U > 1:
            pay, b = (("heads:q", "heads:kv"), q_b + kv_b) if ph == "fwd" else (("heads:dout",), out_b)
            stages.append(Stage(ph, f, 1, (), (_all_to_all(members, b, pay),), "all-to-all: sequence → heads"))
            f += 1
        rs = ring_stages(ph, ring, workload, f, members, hU, kvv)
        stages.extend(rs)
        f += sum(st.n_steps for st in rs)
        if U > 1:
            pay, b = (("seq:out", "seq:lse"), out_b + lse_b) if ph == "fwd" else (("seq:dq", "seq:dkv"), q_b + kv_b)
            stages.append(Stage(ph, f, 1, (), (_all_to_all(members, b, pay),), "all-to-all: heads → sequence"))

    phase_stages("fwd")
    if phase == "fwd+bwd":
        phase_stages("bwd")
    meta = {"layout": spec, "mask": str(mk), "seq_len": T, "phase": phase, "tokens_per_rank": n,
            "heads": m.heads, "ulysses_degree": U, "ring_degree": R,
            "ulysses_groups": "ring-inner (strided ranks)" if ring_inner else "consecutive ranks"}
    return Program(G, stages, strategy=spec, meta=meta, plan=plan,
                   head_groups=HeadGroups(members) if U > 1 else None)


def head_sharded_memory(workload: Workload, U: int, R: int, phase: str, double_buffer: bool = True) -> dict:
    """Per-rank bytes of a Ulysses (R = 1) or USP program (see the module docstring)."""
    from ..memory import kv_memory

    m, B, bpv = workload.model, workload.batch, workload.bytes_per_value
    G = U * R
    n = workload.seq_len // G
    nW, hU = U * n, m.heads // U                       # tokens and query heads of the head layout
    q = B * n * m.heads * m.head_dim * bpv             # sequence layout: queries, output and LSE
    o = B * n * m.heads * (m.v_dim * bpv + 4)
    qW = B * nW * hU * m.head_dim * bpv
    kvW = B * nW * kv_values_per_member(workload, U) * bpv
    oW = B * nW * hU * m.v_dim * bpv
    accW = B * nW * hU * (m.v_dim + 1) * 4
    ring_bufs = (2 if double_buffer else 1) if R > 1 else 0
    work = q + o + qW + kvW * (1 + ring_bufs) + oW + accW
    if phase == "fwd+bwd":
        dkvW = kvW // bpv * GRAD_BYTES_PER_VALUE
        work += B * nW * hU * m.v_dim * bpv + qW // bpv * GRAD_BYTES_PER_VALUE + dkvW * max(ring_bufs, 1)
    kv = kv_memory(workload, G)["kv_shard_per_gpu_bytes"]
    return {"ring_working_set_bytes": int(work), "kv_shard_per_gpu_bytes": int(kv), "peak_memory_bytes": int(work + kv)}


class Ulysses(Strategy):
    """DeepSpeed-Ulysses of degree G: all-to-all to head sharding, local attention over the whole
    sequence on H/G heads, all-to-all back (``ulysses``). See the module docstring."""

    spec = "ulysses"

    def plan(self, workload: Workload, world_size: int, mask) -> Plan:
        check_heads(workload, world_size, self.spec)
        return group_plan(workload, world_size, 1, parse_mask(mask), self.spec)[1]

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        return build_head_sharded(workload, world_size, 1, mask, phase, self.spec)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        check_heads(workload, world_size, self.spec)
        return head_sharded_memory(workload, world_size, 1, phase, double_buffer)
