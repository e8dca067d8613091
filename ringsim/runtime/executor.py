"""The torch runtime's executor: one rank runs its part of a program (DESIGN.md §1).

The program (:mod:`ringsim.program`, built by a strategy) says, per step, which messages this
rank posts (peers, payload buffers, bytes), which kernel calls it makes (rows of its queries ×
rows of the K/V buffer it holds, full/causal/masked — the trimmed blocks of
:class:`ringsim.blocks.CallShapes`) and which memory ops follow them. This module interprets that
data with torch; it decides nothing about the protocol. Every message's tensors are checked
against the program's bytes, so a measured run sends exactly what the simulator sends.

Payload buffers (the ring's vocabulary):

- ``kv`` — the K/V shard the rank holds (K and V stacked, input dtype). Sent to the peer; the one
  received replaces it after the step's wait.
- ``dkv`` — the accumulated dK/dV (fp32) of the shard the rank held at the previous step: sent one
  step behind the K/V. The one received is the accumulation so far of the shard held now; after
  the wait this rank's own contribution is added and it becomes the next ``dkv`` to send. At a
  step without compute (the ring's return) the received ``dkv`` is the complete gradient of the
  rank's own shard.

Memory ops: ``merge`` folds the step's block ``(out, lse)`` into the running fp32 accumulators by
log-sum-exp (:func:`~ringsim.runtime.kernels.merge_`); ``accumulate`` adds the block's dQ rows and
its dK/dV columns.

Instrumentation (a :class:`~ringsim.runtime.instrument.Recorder`): per step with compute a
``compute`` row (zero length when the call is empty, so every such step has one, with the call's
exact pairs and FLOPs), a ``merge`` row for the memory ops, and the communicator's
``send``/``recv``/``wait`` rows. Under ``torch.profiler`` (``ringsim run --profile``) each step can
also be a ``ringsim/<phase>/step <s>`` range (:attr:`RankProgram.markers`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ringsim.program import KernelOp, MemoryOp, Program

from .comm import P2PComm
from .instrument import NullRecorder, Recorder
from .kernels import block_backward, block_forward, default_scale, merge_

__all__ = ["RankProgram", "program_attention", "run_forward", "run_backward"]


def _noop(phase: str, step: int) -> None:
    return None


class _StepRange:
    """A ``torch.profiler.record_function`` range opened now and closed by :meth:`close`."""

    def __init__(self, name: str):
        self._rf = torch.profiler.record_function(name)
        self._rf.__enter__()

    def close(self) -> None:
        self._rf.__exit__(None, None, None)


class _NoRange:
    def close(self) -> None:
        return None


_NO_RANGE = _NoRange()


@dataclass
class RankProgram:
    """One rank's view of a program: its steps per phase, the kernel choice, the softmax scale.

    ``progress(phase, step)`` is called at the start of every step (a heartbeat for watchdogs);
    ``flops_per_pair`` maps a phase to the FLOPs of one allowed pair (the workload's); with
    ``markers`` each step runs inside a ``torch.profiler.record_function`` range named
    ``ringsim/<phase>/step <s>`` (``ringsim run --profile``; the Kineto importer cross-checks its
    mapping against them)."""

    program: Program
    rank: int
    scale: float
    flops_per_pair: dict
    kernel: str = "auto"
    progress: Callable[[str, int], None] = _noop
    steps: dict = field(default_factory=dict)
    markers: bool = False

    def step_range(self, phase: str, step: int):
        """Open the profiler range of one step; ``.close()`` ends it (nothing without ``markers``)."""
        return _StepRange(f"ringsim/{phase}/step {step}") if self.markers else _NO_RANGE

    @classmethod
    def build(cls, program: Program, rank: int, workload, kernel: str = "auto", progress=None,
              scale: float | None = None) -> "RankProgram":
        steps: dict[str, list] = {}
        for rs in program.rank_steps(rank):
            for p in rs.sends + rs.recvs:
                if p.at != "start" or p.wait_after != 0:
                    raise NotImplementedError("the runtime posts every message at its step's start and waits for "
                                              "it in the same step; this program asks otherwise")
            steps.setdefault(rs.phase, []).append(rs)
        fpp = {p: float(workload.flops_per_pair(p)) for p in ("fwd", "bwd")}
        return cls(program, rank, default_scale(workload.model.head_dim) if scale is None else scale, fpp, kernel,
                   progress or _noop, steps)

    @property
    def world_size(self) -> int:
        return self.program.world_size


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def _post(comm: P2PComm, rs, send_bufs: dict, recv_bufs: dict) -> None:
    """Post the step's messages as one batch (sends then receives, in program order), each
    checked against the program's bytes."""
    sends, recvs = [], []
    for side, posts, bufs in (("send", rs.sends, send_bufs), ("recv", rs.recvs, recv_bufs)):
        for p in posts:
            ts = [bufs[name] for name in p.payloads]
            if _nbytes(ts) != int(p.bytes):
                raise AssertionError(f"{rs.phase} step {rs.step}: {side} of {p.payloads} is {_nbytes(ts)} bytes, "
                                     f"the program says {int(p.bytes)}")
            (sends if side == "send" else recvs).append((p.peer, ts))
    comm.post(sends, recvs)
    comm.commit(rs.step, rs.phase)


def _ops(rs, rank: int):
    """The step's (kernel op, BlockPlan of this rank's call) and memory ops, in order."""
    for op in rs.stage.ops:
        if isinstance(op, KernelOp):
            yield op, op.shapes.block(int(op.shape[rs.index, rank]))
        else:
            yield op, None


def run_forward(q, k, v, rp: RankProgram, comm: P2PComm, rec: Recorder):
    """Forward phase for this rank's ``q`` (B, H, n, D) and K/V shard ``k``/``v`` (B, H_kv, n, D).
    Returns ``(out in q's dtype, lse fp32 (B, H, n))``."""
    B, H, n, D = q.shape
    out = torch.zeros(B, H, n, v.shape[-1], dtype=torch.float32, device=q.device)
    lse = torch.full((B, H, n), float("-inf"), dtype=torch.float32, device=q.device)
    cur = torch.stack([k, v]).contiguous()
    nxt = torch.empty_like(cur)
    for rs in rp.steps.get("fwd", []):
        rp.progress("fwd", rs.step)
        marker = rp.step_range("fwd", rs.step)
        _post(comm, rs, {"kv": cur}, {"kv": nxt})
        res = bp = None
        for op, b in _ops(rs, rp.rank):
            if isinstance(op, KernelOp):
                bp = b
                t0 = rec.mark()
                res = None if bp.kind == "empty" else block_forward(q, cur[0], cur[1], bp, rp.scale, rp.kernel)
                rec.add(rs.step, "fwd", "compute", t0, rec.mark(), -1, 0, bp.pairs, bp.pairs * rp.flops_per_pair["fwd"])
            elif isinstance(op, MemoryOp) and op.name == "merge" and res is not None:
                t1 = rec.mark()
                merge_(out[:, :, bp.rows], lse[:, :, bp.rows], res[0], res[1])
                rec.add(rs.step, "fwd", "merge", t1, rec.mark())
        comm.wait()
        marker.close()
        if any("kv" in p.payloads for p in rs.recvs):
            cur, nxt = nxt, cur
    return out.to(q.dtype), lse


def run_backward(dout, q, k, v, out, lse, rp: RankProgram, comm: P2PComm, rec: Recorder):
    """Backward phase; returns ``(dq, dk, dv)`` in the inputs' dtypes for this rank's tokens/shard."""
    cur = torch.stack([k, v]).contiguous()
    nxt = torch.empty_like(cur)
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dkv_cur = torch.zeros((2,) + tuple(k.shape), dtype=torch.float32, device=q.device)  # to send
    dkv_nxt = torch.zeros_like(dkv_cur)  # receives the held shard's accumulated dK/dV
    own = torch.zeros_like(dkv_cur)  # this rank's contribution to the held shard
    out_f = out.float()
    for rs in rp.steps.get("bwd", []):
        rp.progress("bwd", rs.step)
        marker = rp.step_range("bwd", rs.step)
        _post(comm, rs, {"kv": cur, "dkv": dkv_cur}, {"kv": nxt, "dkv": dkv_nxt})
        res = bp = None
        own.zero_()
        for op, b in _ops(rs, rp.rank):
            if isinstance(op, KernelOp):
                bp = b
                t0 = rec.mark()
                res = None if bp.kind == "empty" else block_backward(q, cur[0], cur[1], out_f, lse, dout, bp, rp.scale,
                                                                     rp.kernel)
                rec.add(rs.step, "bwd", "compute", t0, rec.mark(), -1, 0, bp.pairs, bp.pairs * rp.flops_per_pair["bwd"])
            elif isinstance(op, MemoryOp) and op.name == "accumulate" and res is not None:
                t1 = rec.mark()
                dq[:, :, bp.rows] += res[0]
                own[0][:, :, bp.cols] += res[1]
                own[1][:, :, bp.cols] += res[2]
                rec.add(rs.step, "bwd", "merge", t1, rec.mark())
        comm.wait()
        got_dkv = any("dkv" in p.payloads for p in rs.recvs)
        if rs.stage.ops:  # the held shard's accumulation: what came with it (or nothing) plus ours
            if not got_dkv:
                dkv_nxt.zero_()
            dkv_nxt += own
            dkv_cur, dkv_nxt = dkv_nxt, dkv_cur
        elif got_dkv:  # the return: the complete gradient of this rank's own shard
            dkv_cur, dkv_nxt = dkv_nxt, dkv_cur
        marker.close()
        if any("kv" in p.payloads for p in rs.recvs):
            cur, nxt = nxt, cur
    return dq.to(q.dtype), dkv_cur[0].to(k.dtype), dkv_cur[1].to(v.dtype)


class _ProgramAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rp, comm, rec):
        out, lse = run_forward(q.detach(), k.detach(), v.detach(), rp, comm, rec)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.rp, ctx.comm, ctx.rec = rp, comm, rec
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = run_backward(dout.contiguous(), q.detach(), k.detach(), v.detach(), out, lse,
                                  ctx.rp, ctx.comm, ctx.rec)
        return dq, dk, dv, None, None, None


def program_attention(q, k, v, rp: RankProgram, comm: P2PComm, rec: Recorder | None = None):
    """Differentiable context-parallel attention for this rank: ``(out, lse)``; ``lse`` carries no gradient."""
    rec = rec or NullRecorder(rp.rank)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ProgramAttentionFn.apply(q, k, v, rp, comm, rec)
    return run_forward(q, k, v, rp, comm, rec)
