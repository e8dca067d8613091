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

    from .comm import P2PComm
    from .executor import program_attention
    from .instrument import NullRecorder, Recorder
    from .runner import RunConfig, rank_setup

    cfg = RunConfig(world_size=dist.get_world_size(), **cfg_fields).validate()

    def progress(phase, step):
        if heartbeat is not None:
            heartbeat(0, phase, step)

    (q, k, v, dout), ring = rank_setup(cfg, rank, progress=progress)
    modes = {True: (Recorder(rank),), False: (NullRecorder(rank),)}
    comms = {m: P2PComm(rank, cfg.world_size, modes[m][0]) for m in modes}
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
                    program_attention(q, k, v, ring, comm, rec)
            else:
                ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
                out, _ = program_attention(ql, kl, vl, ring, comm, rec)
                out.backward(dout)
            if i >= warmup:
                times[instrumented].append((time.perf_counter_ns() - t0) * 1e-9)
        n_rows = len(modes[True][0].rows)
    for c in comms.values():
        c.close()
    return {"rank": rank, "instrumented_s": times[True], "plain_s": times[False], "rows_recorded": n_rows}
