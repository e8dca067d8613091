"""Ring attention over torch.distributed: forward, backward, and the autograd Function.

Every rank holds its queries and the key/value shard of its own tokens (the plan's partition:
:meth:`ringsim.schedules.Plan.tokens`). The reference protocol of DESIGN §3.2, as run here:

**Forward** — for step s = 0 … G−1 rank r holds the KV shard of rank ``plan.shard_owner(r, s)``:
post (s < G−1) one batched send of that shard to r+1 and receive of the next from r−1; compute
the block against the held shard (skipped when ``plan.pairs[r, s] == 0``); fold it into the
running ``(out, lse)`` by log-sum-exp (:func:`~ringsim.runtime.kernels.merge_`); wait.

**Backward** — a second ring in which the accumulated dK/dV of a shard travel with it. The dK/dV of
the shard held at step s are only complete once this rank's block is computed, so they leave one
step later: at step s the batch sends the held KV (for step s+1, s < G−1) together with the
accumulated dK/dV of the shard held at step s−1 (s ≥ 1), and receives the next KV together with the
dK/dV other ranks accumulated so far for the shard held now. This rank's own contribution is added
after the wait. After the last step one more transfer (recorded as step G, the *return*) brings
every shard's complete dK/dV back to its owner. dQ accumulates locally. In bytes: step 0 moves the
KV shard, steps 1…G−2 the KV shard plus its dK/dV (twice the bytes in the same dtype), step G−1 and
the return only dK/dV. dK/dV travel in fp32 whatever the input dtype.

Instrumentation (a :class:`~ringsim.runtime.instrument.Recorder`): per step a ``compute`` row
(zero length when the block is empty, so every step has one), a ``merge`` row (forward: the lse
merge; backward: adding the block's dQ/dK/dV into the accumulators) and the communicator's
``send``/``recv``/``wait`` rows. Compute rows carry the plan's exact pairs and FLOPs
``4·B·H·d·pairs`` forward, ``10·B·H·d·pairs`` backward (recompute QKᵀ, dV, dP, dQ, dK).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ringsim.schedules import Plan

from .comm import RingComm
from .instrument import NullRecorder, Recorder
from .kernels import BlockPlan, block_backward, block_forward, block_plan, default_scale, merge_

__all__ = ["RankRing", "ring_attention", "ring_forward", "ring_backward", "FWD_FLOPS_PER_PAIR_HEAD_DIM",
           "BWD_FLOPS_PER_PAIR_HEAD_DIM"]

FWD_FLOPS_PER_PAIR_HEAD_DIM = 4
BWD_FLOPS_PER_PAIR_HEAD_DIM = 10


def _noop(phase: str, step: int) -> None:
    return None


@dataclass
class RankRing:
    """Everything one rank needs for one ring: the plan, its blocks per step, the kernel choice.

    ``progress(phase, step)`` is called at the start of every step (a heartbeat for watchdogs).
    """

    plan: Plan
    rank: int
    scale: float
    kernel: str = "auto"
    progress: Callable[[str, int], None] = _noop
    blocks: list[BlockPlan] = field(default_factory=list)

    @classmethod
    def build(cls, plan: Plan, rank: int, head_dim: int, kernel: str = "auto", progress=None,
              scale: float | None = None) -> "RankRing":
        lo, hi = plan.mask.bounds(plan.seq_len)
        q_pos = plan.tokens(rank)
        blocks = []
        for s in range(plan.world_size):
            bp = block_plan(q_pos, plan.tokens(plan.shard_owner(rank, s)), lo, hi)
            if bp.pairs != int(plan.pairs[rank, s]):  # one source of truth: must agree with the plan
                raise AssertionError(f"block pairs {bp.pairs} != plan pairs {plan.pairs[rank, s]} "
                                     f"(rank {rank}, step {s})")
            blocks.append(bp)
        return cls(plan, rank, default_scale(head_dim) if scale is None else scale, kernel,
                   progress or _noop, blocks)

    @property
    def world_size(self) -> int:
        return self.plan.world_size


def _flops(q: torch.Tensor, pairs: int, per: int) -> float:
    B, H, _, D = q.shape
    return float(per * B * H * D * pairs)


def ring_forward(q, k, v, ring: RankRing, comm: RingComm, rec: Recorder):
    """Forward ring for this rank's ``q`` (B, H, n, D) and KV shard ``k``/``v`` (B, H_kv, n, D).
    Returns ``(out in q's dtype, lse fp32 (B, H, n))``."""
    G = ring.world_size
    B, H, n, D = q.shape
    out = torch.zeros(B, H, n, D, dtype=torch.float32, device=q.device)
    lse = torch.full((B, H, n), float("-inf"), dtype=torch.float32, device=q.device)
    cur = torch.stack([k, v]).contiguous()
    nxt = torch.empty_like(cur) if G > 1 else None
    for s in range(G):
        ring.progress("fwd", s)
        if s < G - 1:
            comm.send_recv([cur], [nxt])
            comm.commit(s, "fwd")
        bp = ring.blocks[s]
        t0 = rec.mark()
        res = None if bp.kind == "empty" else block_forward(q, cur[0], cur[1], bp, ring.scale, ring.kernel)
        t1 = rec.mark()
        rec.add(s, "fwd", "compute", t0, t1, -1, 0, bp.pairs, _flops(q, bp.pairs, FWD_FLOPS_PER_PAIR_HEAD_DIM))
        if res is not None:
            merge_(out[:, :, bp.rows], lse[:, :, bp.rows], res[0], res[1])
            rec.add(s, "fwd", "merge", t1, rec.mark())
        comm.wait()
        if s < G - 1:
            cur, nxt = nxt, cur
    return out.to(q.dtype), lse


def ring_backward(dout, q, k, v, out, lse, ring: RankRing, comm: RingComm, rec: Recorder):
    """Backward ring; returns ``(dq, dk, dv)`` in the inputs' dtypes for this rank's tokens/shard."""
    G = ring.world_size
    cur = torch.stack([k, v]).contiguous()
    nxt = torch.empty_like(cur)
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dkv_cur = torch.zeros((2,) + tuple(k.shape), dtype=torch.float32, device=q.device)  # to forward
    dkv_nxt = torch.zeros_like(dkv_cur)  # receives the held shard's accumulated dK/dV
    own = torch.zeros_like(dkv_cur)  # this rank's contribution to the held shard
    out_f = out.float()
    for s in range(G):
        ring.progress("bwd", s)
        sends, recvs = [], []
        if s < G - 1:
            sends.append(cur)
            recvs.append(nxt)
        if s >= 1:
            sends.append(dkv_cur)
            recvs.append(dkv_nxt)
        comm.send_recv(sends, recvs)
        comm.commit(s, "bwd")
        bp = ring.blocks[s]
        t0 = rec.mark()
        res = None if bp.kind == "empty" else block_backward(q, cur[0], cur[1], out_f, lse, dout, bp, ring.scale,
                                                             ring.kernel)
        t1 = rec.mark()
        rec.add(s, "bwd", "compute", t0, t1, -1, 0, bp.pairs, _flops(q, bp.pairs, BWD_FLOPS_PER_PAIR_HEAD_DIM))
        own.zero_()
        if res is not None:
            dq[:, :, bp.rows] += res[0]
            own[0][:, :, bp.cols] += res[1]
            own[1][:, :, bp.cols] += res[2]
            rec.add(s, "bwd", "merge", t1, rec.mark())
        comm.wait()
        # dkv_nxt now holds what the others accumulated for the shard held at step s (nothing at s=0)
        if s == 0:
            dkv_nxt.zero_()
        dkv_nxt += own
        dkv_cur, dkv_nxt = dkv_nxt, dkv_cur
        if s < G - 1:
            cur, nxt = nxt, cur
    if G > 1:  # the return: each shard's complete dK/dV goes back to its owner (r+1 for what r holds)
        ring.progress("bwd", G)
        comm.send_recv([dkv_cur], [dkv_nxt])
        comm.commit(G, "bwd")
        comm.wait()
        dkv_cur = dkv_nxt
    return dq.to(q.dtype), dkv_cur[0].to(k.dtype), dkv_cur[1].to(v.dtype)


class _RingAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ring, comm, rec):
        out, lse = ring_forward(q.detach(), k.detach(), v.detach(), ring, comm, rec)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.ring, ctx.comm, ctx.rec = ring, comm, rec
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = ring_backward(dout.contiguous(), q.detach(), k.detach(), v.detach(), out, lse,
                                   ctx.ring, ctx.comm, ctx.rec)
        return dq, dk, dv, None, None, None


def ring_attention(q, k, v, ring: RankRing, comm: RingComm, rec: Recorder | None = None):
    """Differentiable ring attention for this rank: ``(out, lse)``; ``lse`` carries no gradient."""
    rec = rec or NullRecorder(ring.rank)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _RingAttentionFn.apply(q, k, v, ring, comm, rec)
    return ring_forward(q, k, v, ring, comm, rec)
