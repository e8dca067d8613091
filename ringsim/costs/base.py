"""The cost model interface: how long the compute ops of a program take (the pluggable part).

A cost model prices a program's compute ops: every kernel call (:class:`~ringsim.program.KernelOp`:
query rows × key rows, full/causal/masked, forward/backward, exact pairs) and every memory-bound
op (:class:`~ringsim.program.MemoryOp`: bytes touched). :meth:`CostModel.step_seconds` turns a whole
program into the compute time of every (step, rank) — the engines never price anything
themselves — and everything else that needs seconds of compute (the hide-block size, the plan
report's bounds) asks :meth:`CostModel.call_seconds` for the calls it has in mind, so a
calibration or a kernel profile is used wherever compute time appears.

Calls are priced once per distinct call shape (a ring meets a handful) and gathered, so pricing a
1024-rank ring costs a few array operations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..blocks import KIND_CODES


from ..program import KernelOp, MemoryOp, Program
from ..topology import Topology
from ..workload import Workload

__all__ = ["CostModel", "CostContext", "speed_factors"]


@dataclass
class CostContext:
    """What pricing a program needs besides the ops: the program, its workload, the topology the
    engine runs on (after :meth:`CostModel.apply_to_topology`)."""

    program: Program
    workload: Workload
    topology: Topology

    @property
    def tokens_per_rank(self) -> int:
        plan = self.program.plan
        return int(plan.tokens_per_rank) if plan is not None else 0


def speed_factors(topology: Topology, world_size: int) -> np.ndarray:
    """Per-rank speed multiplier (what-if stragglers), shape (G,)."""
    return np.array([topology.device_of(r).speed_factor for r in range(world_size)], dtype=np.float64)


class CostModel:
    """Interface. Subclasses implement :meth:`call_seconds` (one device, a batch of calls), and may
    override :meth:`kernel_seconds`, :meth:`memory_seconds` or the whole :meth:`step_seconds`.

    ``apply_to_topology`` lets a model replace link figures (a calibration fits latency and
    bandwidth per link class); the default leaves the topology as it is."""

    name = "base"

    # ---- one kind of call -------------------------------------------------------------------------
    def call_seconds(self, workload: Workload, topology: Topology, q_rows, k_rows, pairs, kind, phase: str,
                     tiles=None, heads: int | None = None) -> np.ndarray:  # pragma: no cover - interface
        """Seconds of kernel calls on the topology's device at speed factor 1: arrays of query
        rows, key rows, exact pairs, kind codes (:data:`ringsim.blocks.KIND_CODES`) and, when the
        device tiles its kernels, the non-empty tiles; ``phase`` is ``fwd`` or ``bwd``; ``heads``
        the query heads a call covers (None: all of the model's, e.g. H/U after a Ulysses
        all-to-all). An empty call (kind ``empty``) costs nothing."""
        raise NotImplementedError

    def kernel_seconds(self, op: KernelOp, ctx: CostContext) -> np.ndarray:
        """Seconds of one kernel slot per (step, rank), priced per distinct call shape."""
        sh = op.shapes
        tile = ctx.topology.device.tile
        tiles = sh.tiles(*tile) if tile else None
        per_shape = self.call_seconds(ctx.workload, ctx.topology, sh.q_rows, sh.k_rows, sh.pairs, sh.kind, op.phase,
                                      tiles, op.heads)
        return np.asarray(per_shape, dtype=np.float64)[op.shape]

    def memory_seconds(self, op: MemoryOp, ctx: CostContext) -> np.ndarray:
        """Seconds of one memory slot per (step, rank): bytes at the device's memory bandwidth
        plus a launch latency per kernel, when the device states them (0 otherwise)."""
        dev = ctx.topology.device
        bw = getattr(dev, "memory_bandwidth_Bps", None)
        launch = getattr(dev, "launch_s", 0.0) or 0.0
        b = np.asarray(op.bytes, dtype=np.float64)
        t = b / bw if bw else np.zeros(b.shape)
        if launch:
            t = t + np.where(b > 0, launch * np.asarray(op.launches, dtype=np.float64), 0.0)
        return t

    # ---- a whole program ---------------------------------------------------------------------------
    def step_seconds(self, ctx: CostContext) -> np.ndarray:
        """Compute seconds of every (global step, rank), ``[N, G]``: the step's ops in order
        (kernel calls and memory ops), divided by the rank's speed factor."""
        prog = ctx.program
        G = prog.world_size
        out = np.zeros((prog.n_steps, G))
        n0 = 0
        for st in prog.stages:
            sl = out[n0:n0 + st.n_steps]
            for op in st.ops:
                sl += self.kernel_seconds(op, ctx) if isinstance(op, KernelOp) else self.memory_seconds(op, ctx)
            n0 += st.n_steps
        return out / speed_factors(ctx.topology, G)[None, :]

    def apply_to_topology(self, topology: Topology, program: Program | None = None) -> Topology:
        return topology

    def transfer_sm_share(self, topology: Topology) -> dict[str, float]:
        """Link class → the share of a rank's compute units a transfer over that class holds while
        it is in flight (NCCL's send/recv kernels), which the engines take out of the compute it
        overlaps (:func:`ringsim.engines.nccl_compute_slowdown`). None here: the roofline and the
        calibrated model leave compute as they price it."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name}

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def empty(kind) -> np.ndarray:
        return np.asarray(kind) == KIND_CODES["empty"]

    @staticmethod
    def head_share(workload: Workload, heads: int | None) -> float:
        """The share of the model's query heads a call covers (1 for all)."""
        return float(heads) / workload.model.heads if heads else 1.0
