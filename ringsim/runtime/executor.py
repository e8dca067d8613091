"""The torch runtime's executor: one rank runs its part of a program (DESIGN.md §1).

The program (:mod:`ringsim.program`, built by a strategy) says, per step, which messages this
rank posts (peers, payload buffers, bytes, parts), which kernel calls it makes (rows of the
queries × rows of the K/V buffer the call reads, full/causal/masked — the trimmed blocks of
:class:`ringsim.blocks.CallShapes`) and which memory ops follow them. This module interprets that
data with torch; it decides nothing about the protocol. Every message's tensors are checked
against the program's bytes, so a measured run sends exactly what the simulator sends.

A step runs as the program model says: post the messages due at the step's start (one batch),
run the ops, post the messages due at the compute's end (a second batch), wait for all of them,
then file what arrived into its buffer.

**Layouts.** Kernel calls read the *work layout*: the rank's own tokens with every head, or — in a
program with :class:`~ringsim.program.HeadGroups` (Ulysses, USP) — the group's tokens with this
rank's block of heads. The forward's work-layout queries, own K/V, output and LSE are kept for the
backward (what a Ulysses layer saves: its backward does not repeat the forward's all-to-all).

**Payload buffers** (each message's tensors, in the order its payload names them):

- ``kv`` — the K/V the rank holds in the work layout (K and V stacked, input dtype); its own at a
  phase's start; one received replaces it after the step's wait.
- ``dkv`` — the travelling dK/dV accumulator (fp32) of the K/V held at the previous step; the one
  received is the accumulation so far of the K/V held now, to which this rank's contribution is
  added after the wait. At a step without kernel calls the received ``dkv`` is the complete
  gradient of the rank's own K/V.
- ``kv_all`` — the parts of an all-gather (part p: owner p's K/V in its local order); the rank's
  own part is filled at the phase's start, received parts land in place.
- ``dkv_all`` — the parts of a reduce-scatter of dK/dV (fp32); received parts wait for the next
  ``reduce`` op, which adds them to the rank's own.
- ``heads:q``, ``heads:kv``, ``heads:dout`` — all-to-all pieces into the head layout: the
  sender's tokens for the receiver's heads (the receiver files them at the sender's place in the
  group's token order); ``seq:out``, ``seq:lse``, ``seq:dq``, ``seq:dkv`` — back to the sequence
  layout: the sender's heads for the receiver's tokens (dK/dV of a K/V head replicated on several
  members are summed). Outputs and gradients travel in the input dtype, LSE in fp32.

**Memory ops**: ``merge`` folds the last call's ``(out, lse)`` into the running fp32 accumulators
by log-sum-exp (:func:`~ringsim.runtime.kernels.merge_`); ``accumulate`` adds the last backward
call's dQ rows and its dK/dV columns (into the travelling accumulator's contribution for ``kv``,
into the token-order gradient for ``kv_all``); ``gather`` lays the ``kv_all`` parts out in token
order (positions from the program's plan); ``scatter`` splits the token-order gradient into
``dkv_all`` parts; ``reduce`` adds the received ``dkv_all`` parts.

Instrumentation (a :class:`~ringsim.runtime.instrument.Recorder`): per kernel call a ``compute``
row (zero length when the call is empty, with the call's exact pairs and FLOPs — the FLOPs of the
heads it covers), a zero-length ``compute`` row for a step whose ops are memory ops only (every
step with ops has one, as in a simulated timeline), a ``merge`` row per memory op that ran, and
the communicator's ``send``/``recv``/``wait`` rows. Under ``torch.profiler`` (``ringsim run
--profile``) each step can also be a ``ringsim/<phase>/step <s>`` range (:attr:`RankProgram.markers`).
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
    ``flops_per_pair`` maps a phase to the FLOPs of one allowed pair (the workload's, all heads);
    with ``markers`` each step runs inside a ``torch.profiler.record_function`` range named
    ``ringsim/<phase>/step <s>`` (``ringsim run --profile``; the Kineto importer cross-checks its
    mapping against them)."""

    program: Program
    rank: int
    scale: float
    flops_per_pair: dict
    kernel: str = "auto"
    progress: Callable[[str, int], None] = _noop
    steps: dict = field(default_factory=dict)
    heads: int = 0
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
                if p.wait_after != 0:
                    raise NotImplementedError(f"strategy {program.strategy}: the runtime waits for every message in "
                                              "the step that posts it; this program waits later (an outer ring "
                                              "overlapped with an inner one) and runs only in the simulator")
            steps.setdefault(rs.phase, []).append(rs)
        fpp = {p: float(workload.flops_per_pair(p)) for p in ("fwd", "bwd")}
        return cls(program, rank, default_scale(workload.model.head_dim) if scale is None else scale, fpp, kernel,
                   progress or _noop, steps, workload.model.heads)

    @property
    def world_size(self) -> int:
        return self.program.world_size


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


class _Layout:
    """Where this rank's pieces sit in the work layout (see the module docstring)."""

    def __init__(self, rp: RankProgram, H: int, Hkv: int, n: int):
        hg = rp.program.head_groups
        self.U = hg.degree if hg is not None else 1
        self.me = hg.member(rp.rank)[1] if hg is not None else 0
        self.hg, self.H, self.Hkv, self.n = hg, H, Hkv, n
        self.hpu = H // self.U                         # query heads per member

    def member(self, rank: int) -> int:
        return self.hg.member(rank)[1]

    def heads(self, u: int) -> slice:
        return slice(u * self.hpu, (u + 1) * self.hpu)

    def kv_heads(self, u: int) -> slice:
        if self.hg is None:
            return slice(0, self.Hkv)
        r = self.hg.kv_heads_of(u, self.H, self.Hkv)
        return slice(r.start, r.stop)

    def tokens(self, u: int) -> slice:
        return slice(u * self.n, (u + 1) * self.n)


class _State:
    """One phase's buffers of one rank (names as in the module docstring)."""

    def __init__(self, rp: RankProgram, phase: str, q, kv_own, lay: _Layout, plan):
        self.rp, self.phase, self.lay, self.plan = rp, phase, lay, plan
        self.q, self.kv = q, kv_own                  # work-layout queries; held K/V
        self.kv_own = kv_own
        self.kv_parts = self.kv_global = None
        self.dkv_parts = self.dkv_global = None
        self.pending: list = []                      # received dkv_all parts waiting for a reduce
        self.res = self.bp = None                    # the last call's result and block
        self.last_kv = "kv"

    # ---- collectives' buffers ------------------------------------------------------------
    def parts(self):
        if self.kv_parts is None:
            G = self.rp.world_size
            self.kv_parts = self.kv_own.new_empty((G,) + tuple(self.kv_own.shape))
            self.kv_parts[self.rp.rank].copy_(self.kv_own)
        return self.kv_parts

    def grad_parts(self):
        if self.dkv_parts is None:
            G = self.rp.world_size
            self.dkv_parts = torch.zeros((G,) + tuple(self.kv_own.shape), dtype=torch.float32,
                                         device=self.kv_own.device)
        return self.dkv_parts

    def gather(self) -> None:
        parts = self.parts()
        G = self.rp.world_size
        shape = list(self.kv_own.shape)
        shape[3] = G * shape[3]
        self.kv_global = parts.new_empty(shape)
        for p in range(G):
            self.kv_global[:, :, :, torch.as_tensor(self.plan.tokens(p))] = parts[p]

    def scatter(self) -> None:
        parts = self.grad_parts()
        for p in range(self.rp.world_size):
            parts[p] = self.dkv_global[:, :, :, torch.as_tensor(self.plan.tokens(p))]

    def reduce(self) -> None:
        parts = self.grad_parts()
        for first, t in self.pending:
            parts[first:first + t.shape[0]] += t
        self.pending = []

    def held(self, name: str):
        if name == "kv":
            return self.kv
        if name == "kv_all":
            if self.kv_global is None:
                raise RuntimeError("a call reads the gathered K/V before a gather op laid it out")
            return self.kv_global
        raise NotImplementedError(f"kernel calls reading buffer {name!r} are not supported by the runtime")


class _Forward(_State):
    def __init__(self, rp, q, kv_own, lay, plan):
        super().__init__(rp, "fwd", q, kv_own, lay, plan)
        B, h, N, _ = q.shape
        self.out = torch.zeros(B, h, N, kv_own.shape[-1], dtype=torch.float32, device=q.device)
        self.lse = torch.full((B, h, N), float("-inf"), dtype=torch.float32, device=q.device)


class _Backward(_State):
    def __init__(self, rp, saved, lay, plan):
        super().__init__(rp, "bwd", saved["q"], saved["kv"], lay, plan)
        self.out_f, self.lse, self.dout = saved["out"], saved["lse"], saved["dout"]
        self.dq = torch.zeros(self.q.shape, dtype=torch.float32, device=self.q.device)
        self.dkv_cur = torch.zeros(self.kv_own.shape, dtype=torch.float32, device=self.q.device)  # to send
        self.dkv_nxt = torch.zeros_like(self.dkv_cur)  # receives the held K/V's accumulated dK/dV
        self.own = torch.zeros_like(self.dkv_cur)      # this rank's contribution to the held K/V


# ---- posting and filing messages --------------------------------------------------------------
def _send_tensors(st: _State, name: str, post, seq: dict) -> list:
    lay = st.lay
    if name == "kv":
        return [st.kv]
    if name == "dkv":
        return [st.dkv_cur]
    if name == "kv_all":
        return [st.parts()[post.part:post.part + post.parts]]
    if name == "dkv_all":
        return [st.grad_parts()[post.part:post.part + post.parts]]
    u = lay.member(post.peer)
    if name == "heads:q":
        return [seq["q"][:, lay.heads(u)].contiguous()]
    if name == "heads:kv":
        return [seq["kv"][:, :, lay.kv_heads(u)].contiguous()]
    if name == "heads:dout":
        return [seq["dout"][:, lay.heads(u)].contiguous()]
    dt = seq["dtype"]
    if name == "seq:out":
        return [st.out[:, :, lay.tokens(u)].to(dt).contiguous()]
    if name == "seq:lse":
        return [st.lse[:, :, lay.tokens(u)].contiguous()]
    if name == "seq:dq":
        return [st.dq[:, :, lay.tokens(u)].to(dt).contiguous()]
    if name == "seq:dkv":
        return [st.dkv_cur[:, :, :, lay.tokens(u)].to(dt).contiguous()]
    raise NotImplementedError(f"payload {name!r} is not supported by the runtime (simulation only)")


def _recv_tensors(st: _State, name: str, post, seq: dict) -> list:
    """Tensors to receive into; ``("file", …)`` entries are filed after the wait (:func:`_file`)."""
    if name == "kv":
        return [torch.empty_like(st.kv)]
    if name == "dkv":
        return [st.dkv_nxt]
    if name == "kv_all":
        return [st.parts()[post.part:post.part + post.parts]]
    if name == "dkv_all":
        return [st.grad_parts().new_empty((post.parts,) + tuple(st.kv_own.shape))]
    lay = st.lay
    u = lay.member(post.peer)
    dt, B = seq["dtype"], seq["q"].shape[0]
    n, D, Dv = lay.n, seq["q"].shape[-1], seq["kv"].shape[-1]
    dev = seq["q"].device
    if name == "heads:q":
        return [torch.empty(B, lay.hpu, n, D, dtype=dt, device=dev)]
    if name == "heads:kv":
        k = lay.kv_heads(lay.me)
        return [torch.empty(2, B, k.stop - k.start, n, D, dtype=dt, device=dev)]
    if name == "heads:dout":
        return [torch.empty(B, lay.hpu, n, Dv, dtype=dt, device=dev)]
    if name == "seq:out":
        return [torch.empty(B, lay.hpu, n, Dv, dtype=dt, device=dev)]
    if name == "seq:lse":
        return [torch.empty(B, lay.hpu, n, dtype=torch.float32, device=dev)]
    if name == "seq:dq":
        return [torch.empty(B, lay.hpu, n, D, dtype=dt, device=dev)]
    if name == "seq:dkv":
        k = lay.kv_heads(u)
        return [torch.empty(2, B, k.stop - k.start, n, D, dtype=dt, device=dev)]
    raise NotImplementedError(f"payload {name!r} is not supported by the runtime (simulation only)")


def _file(st: _State, name: str, post, t, seq: dict) -> None:
    """After the wait: put what arrived where it belongs."""
    lay = st.lay
    if name == "kv":
        st.kv = t
        return
    if name in ("dkv", "kv_all"):
        return  # received in place
    if name == "dkv_all":
        st.pending.append((post.part, t))
        return
    u = lay.member(post.peer)
    if name == "heads:q":
        st.q[:, :, lay.tokens(u)] = t
    elif name == "heads:kv":
        st.kv_own[:, :, :, lay.tokens(u)] = t
    elif name == "heads:dout":
        st.dout[:, :, lay.tokens(u)] = t.float()
    elif name == "seq:out":
        seq["out"][:, lay.heads(u)] = t.float()
    elif name == "seq:lse":
        seq["lse"][:, lay.heads(u)] = t
    elif name == "seq:dq":
        seq["dq"][:, lay.heads(u)] = t.float()
    elif name == "seq:dkv":
        seq["dkv"][:, :, lay.kv_heads(u)] += t.float()


def _post(comm: P2PComm, rs, st: _State, seq: dict, at: str, arrived: list) -> None:
    """Post the step's messages due ``at`` the step's start or its compute's end as one batch
    (sends then receives, in program order), each checked against the program's bytes."""
    sends, recvs = [], []
    for side, posts in (("send", rs.sends), ("recv", rs.recvs)):
        for p in posts:
            if p.at != at:
                continue
            if side == "send":
                ts = [t for name in p.payloads for t in _send_tensors(st, name, p, seq)]
            else:
                per = [(name, _recv_tensors(st, name, p, seq)) for name in p.payloads]
                ts = [t for _, x in per for t in x]
                arrived += [(name, p, x[0]) for name, x in per]
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


def _run_ops(rs, st: _State, rec: Recorder) -> None:
    rp, ph = st.rp, st.phase
    ops = list(_ops(rs, rp.rank))
    if ops and not any(isinstance(op, KernelOp) for op, _ in ops):
        t = rec.mark()
        rec.add(rs.step, ph, "compute", t, t)
    if isinstance(st, _Backward):
        st.own.zero_()
    for op, b in ops:
        t0 = rec.mark()
        if isinstance(op, KernelOp):
            st.bp, st.last_kv = b, op.kv
            kv = st.held(op.kv)
            share = (op.heads / rp.heads) if (op.heads and rp.heads) else 1.0
            if b.kind == "empty":
                st.res = None
            elif ph == "fwd":
                st.res = block_forward(st.q, kv[0], kv[1], b, rp.scale, rp.kernel)
            else:
                st.res = block_backward(st.q, kv[0], kv[1], st.out_f, st.lse, st.dout, b, rp.scale, rp.kernel)
            rec.add(rs.step, ph, "compute", t0, rec.mark(), -1, 0, b.pairs, b.pairs * share * rp.flops_per_pair[ph])
            continue
        ran = True
        if op.name == "merge" and st.res is not None:
            merge_(st.out[:, :, st.bp.rows], st.lse[:, :, st.bp.rows], st.res[0], st.res[1])
        elif op.name == "accumulate" and st.res is not None:
            st.dq[:, :, st.bp.rows] += st.res[0]
            if st.last_kv == "kv":
                st.own[0][:, :, st.bp.cols] += st.res[1]
                st.own[1][:, :, st.bp.cols] += st.res[2]
            else:
                if st.dkv_global is None:
                    st.dkv_global = torch.zeros(st.kv_global.shape, dtype=torch.float32, device=st.q.device)
                st.dkv_global[0][:, :, st.bp.cols] += st.res[1]
                st.dkv_global[1][:, :, st.bp.cols] += st.res[2]
        elif op.name == "gather":
            st.gather()
        elif op.name == "scatter":
            st.scatter()
        elif op.name == "reduce":
            st.reduce()
        else:
            ran = False  # priced only (copy), or nothing to merge after an empty call
        if ran:
            rec.add(rs.step, ph, "merge", t0, rec.mark())


def _run_phase(st: _State, seq: dict, comm: P2PComm, rec: Recorder) -> None:
    rp = st.rp
    for rs in rp.steps.get(st.phase, []):
        rp.progress(st.phase, rs.step)
        marker = rp.step_range(st.phase, rs.step)
        arrived: list = []
        _post(comm, rs, st, seq, "start", arrived)
        _run_ops(rs, st, rec)
        _post(comm, rs, st, seq, "end", arrived)
        comm.wait()
        for name, post, t in arrived:
            _file(st, name, post, t, seq)
        if isinstance(st, _Backward):
            reads_kv = any(isinstance(op, KernelOp) and op.kv == "kv" for op in rs.stage.ops)
            got_dkv = any(name == "dkv" for name, _, _ in arrived)
            if reads_kv:  # the held K/V's accumulation: what came with it (or nothing) plus ours
                if not got_dkv:
                    st.dkv_nxt.zero_()
                st.dkv_nxt += st.own
                st.dkv_cur, st.dkv_nxt = st.dkv_nxt, st.dkv_cur
            elif got_dkv:  # a return: the complete gradient of this rank's own K/V
                st.dkv_cur, st.dkv_nxt = st.dkv_nxt, st.dkv_cur
        marker.close()


def _work_inputs(lay: _Layout, q, kv):
    """The work-layout queries and own K/V with this rank's own piece in place (the rest arrives
    by ``heads:*`` messages)."""
    if lay.hg is None:
        return q, kv
    B, _, n, D = q.shape
    u = lay.me
    wq = q.new_zeros(B, lay.hpu, lay.U * n, D)
    wq[:, :, lay.tokens(u)] = q[:, lay.heads(u)]
    k = lay.kv_heads(u)
    wkv = kv.new_zeros(2, B, k.stop - k.start, lay.U * n, kv.shape[-1])
    wkv[:, :, :, lay.tokens(u)] = kv[:, :, k]
    return wq, wkv


def run_forward(q, k, v, rp: RankProgram, comm: P2PComm, rec: Recorder, saved: dict | None = None):
    """Forward phase for this rank's ``q`` (B, H, n, D) and K/V ``k``/``v`` (B, H_kv, n, D) (its
    tokens). Returns ``(out in q's dtype, lse fp32 (B, H, n))``; fills ``saved`` (when given) with
    the work-layout tensors the backward reads."""
    B, H, n, D = q.shape
    lay = _Layout(rp, H, k.shape[1], n)
    kv = torch.stack([k, v]).contiguous()
    wq, wkv = _work_inputs(lay, q, kv)
    st = _Forward(rp, wq, wkv, lay, rp.program.plan)
    seq = {"q": q, "kv": kv, "dtype": q.dtype}
    if lay.hg is not None:
        seq["out"] = torch.zeros(B, H, n, v.shape[-1], dtype=torch.float32, device=q.device)
        seq["lse"] = torch.full((B, H, n), float("-inf"), dtype=torch.float32, device=q.device)
    _run_phase(st, seq, comm, rec)
    if lay.hg is None:
        out, lse = st.out, st.lse
    else:
        out, lse = seq["out"], seq["lse"]
        out[:, lay.heads(lay.me)] = st.out[:, :, lay.tokens(lay.me)]
        lse[:, lay.heads(lay.me)] = st.lse[:, :, lay.tokens(lay.me)]
    if saved is not None:
        saved.update(q=st.q, kv=st.kv_own, out=st.out.to(q.dtype).float(), lse=st.lse)
    return out.to(q.dtype), lse


def run_backward(dout, q, k, v, out, lse, rp: RankProgram, comm: P2PComm, rec: Recorder, saved: dict | None = None):
    """Backward phase; returns ``(dq, dk, dv)`` in the inputs' dtypes for this rank's tokens.
    ``saved`` is what :func:`run_forward` kept (None: the sequence layout, rebuilt from the
    arguments — every program without head groups)."""
    B, H, n, D = q.shape
    lay = _Layout(rp, H, k.shape[1], n)
    kv = torch.stack([k, v]).contiguous()
    if saved is None:
        if lay.hg is not None:
            raise ValueError("a head-sharded program's backward needs the forward's saved work layout")
        saved = {"q": q, "kv": kv, "out": out.float(), "lse": lse}
    seq = {"q": q, "kv": kv, "dout": dout, "dtype": q.dtype}
    if lay.hg is None:
        wdout = dout.float()
    else:
        wdout = torch.zeros(B, lay.hpu, lay.U * n, dout.shape[-1], dtype=torch.float32, device=q.device)
        wdout[:, :, lay.tokens(lay.me)] = dout[:, lay.heads(lay.me)].float()
        seq["dq"] = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        seq["dkv"] = torch.zeros(kv.shape, dtype=torch.float32, device=q.device)
    st = _Backward(rp, dict(saved, dout=wdout), lay, rp.program.plan)
    _run_phase(st, seq, comm, rec)
    wdkv = st.dkv_parts[rp.rank] if st.dkv_parts is not None else st.dkv_cur
    if lay.hg is None:
        dq, dkv = st.dq, wdkv
    else:
        dq, dkv = seq["dq"], seq["dkv"]
        dq[:, lay.heads(lay.me)] = st.dq[:, :, lay.tokens(lay.me)]
        dkv[:, :, lay.kv_heads(lay.me)] += wdkv[:, :, :, lay.tokens(lay.me)]
    return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype)


class _ProgramAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rp, comm, rec):
        saved: dict = {}
        out, lse = run_forward(q.detach(), k.detach(), v.detach(), rp, comm, rec, saved)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.rp, ctx.comm, ctx.rec = rp, comm, rec
        ctx.work = saved if rp.program.head_groups is not None else None
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = run_backward(dout.contiguous(), q.detach(), k.detach(), v.detach(), out, lse,
                                  ctx.rp, ctx.comm, ctx.rec, ctx.work)
        return dq, dk, dv, None, None, None


def program_attention(q, k, v, rp: RankProgram, comm: P2PComm, rec: Recorder | None = None):
    """Differentiable context-parallel attention for this rank: ``(out, lse)``; ``lse`` carries no gradient."""
    rec = rec or NullRecorder(rp.rank)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _ProgramAttentionFn.apply(q, k, v, rp, comm, rec)
    return run_forward(q, k, v, rp, comm, rec)
