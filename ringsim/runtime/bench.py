"""Instrumentation overhead: the same ring, recorded and not recorded, interleaved in one group.

:func:`overhead_worker` runs ``pairs`` rounds; each round runs one iteration with a recording
:class:`~ringsim.runtime.instrument.Recorder` (and the communicator's completion-stamping waiter
threads) and one with :class:`~ringsim.runtime.instrument.NullRecorder` (plain waits), in
alternating order so that drift (thermal, other load) hits both alike. An iteration's time is
from the barrier release to this rank's end; the caller takes the slowest rank per iteration.
"""
from __future__ import annotations

import time

__all__ = ["overhead_worker"]


def overhead_worker(cfg_fields: dict, pairs: int, warmup: int, rank: int, heartbeat=None) -> dict:
    import torch
    import torch.distributed as dist

    from ringsim.schedules import Plan

    from .comm import RingComm
    from .instrument import NullRecorder, Recorder
    from .ring import RankRing, ring_attention
    from .runner import RunConfig, _torch_dtype, make_inputs

    cfg = RunConfig(world_size=dist.get_world_size(), **cfg_fields).validate()
    plan = Plan(cfg.schedule, cfg.world_size, cfg.seq_len, cfg.mask)
    idx = torch.as_tensor(plan.tokens(rank))
    q, k, v, dout = (t.index_select(2, idx).to(_torch_dtype(cfg.dtype)).contiguous() for t in make_inputs(cfg))

    def progress(phase, step):
        if heartbeat is not None:
            heartbeat(0, phase, step)

    ring = RankRing.build(plan, rank, cfg.head_dim, cfg.kernel, progress)
    modes = {True: (Recorder(rank),), False: (NullRecorder(rank),)}
    comms = {m: RingComm(rank, cfg.world_size, modes[m][0]) for m in modes}
    times = {True: [], False: []}
    n_rows = 0
    for i in range(warmup + pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        for instrumented in order:
            rec, comm = modes[instrumented][0], comms[instrumented]
            dist.barrier()
            t0 = time.perf_counter_ns()
            if cfg.phase == "fwd":
                with torch.no_grad():
                    ring_attention(q, k, v, ring, comm, rec)
            else:
                ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
                out, _ = ring_attention(ql, kl, vl, ring, comm, rec)
                out.backward(dout)
            if i >= warmup:
                times[instrumented].append((time.perf_counter_ns() - t0) * 1e-9)
        n_rows = len(modes[True][0].rows)
    for c in comms.values():
        c.close()
    return {"rank": rank, "instrumented_s": times[True], "plain_s": times[False], "rows_recorded": n_rows}
