"""Many ring configurations in one process group: the runtime's conformance worker.

Starting ranks costs seconds (processes, torch, a gloo rendezvous); running a small ring costs
milliseconds. :func:`conformance_worker` therefore runs a whole list of configurations (schedule,
length, mask, phase, heads, …) inside one group and returns, per configuration, this rank's outputs
(``out, lse`` and, for ``fwd+bwd``, ``dq, dk, dv``), its communicator byte counters and the bytes
of its recorded ``send``/``recv`` rows per (phase, step). Run it with
:func:`ringsim.runtime.launch.run_world`; compare with :func:`~ringsim.runtime.runner.check_outputs`
style references in the caller. The tests use it; it is also a quick self-check for a new machine.
"""
from __future__ import annotations

__all__ = ["conformance_worker", "runs_worker"]


def conformance_worker(configs: list[dict], rank: int, heartbeat=None) -> list[dict]:
    """``configs``: dicts of :class:`~ringsim.runtime.runner.RunConfig` fields (world size filled
    in by the caller). Returns one result dict per configuration, in order."""
    import torch
    import torch.distributed as dist

    from .comm import P2PComm
    from .executor import program_attention
    from .instrument import Recorder
    from .runner import RunConfig, rank_setup

    out = []
    G = dist.get_world_size()
    for i, c in enumerate(configs):
        cfg = RunConfig(world_size=G, **c).validate()

        def progress(phase, step, i=i):
            if heartbeat is not None:
                heartbeat(i, phase, step)

        (q, k, v, dout), ring = rank_setup(cfg, rank, progress=progress)
        rec = Recorder(rank)
        rec.iteration = 0
        comm = P2PComm(rank, G, rec)
        try:
            if cfg.phase == "fwd":
                with torch.no_grad():
                    o, lse = program_attention(q, k, v, ring, comm, rec)
                res = {"out": o.float(), "lse": lse}
            else:
                ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
                o, lse = program_attention(ql, kl, vl, ring, comm, rec)
                o.backward(dout)
                res = {"out": o.detach().float(), "lse": lse, "dq": ql.grad.float(), "dk": kl.grad.float(),
                       "dv": vl.grad.float()}
        finally:
            comm.close()
        rows = {}
        compute_steps = set()
        for (_, step, phase, kind, _, _, peer, nbytes, pairs, _) in rec.rows:
            if kind in ("send", "recv"):
                rows.setdefault((phase, step, kind), []).append((peer, nbytes))
            if kind == "compute":
                compute_steps.add((phase, step, pairs))
        res.update(bytes_sent=comm.bytes_sent, bytes_received=comm.bytes_received, transfer_rows=rows,
                   compute_steps=sorted(compute_steps))
        out.append(res)
    return out


def runs_worker(configs: list[dict], rank: int, heartbeat=None) -> list[dict]:
    """Full measured runs (:func:`~ringsim.runtime.runner.run_rank`: warm-up, timed iterations,
    recording, ``profile`` if set) of several configurations in one process group; one
    ``run_rank`` result per configuration, in order (assemble each with
    :func:`~ringsim.runtime.runner.assemble`)."""
    import torch.distributed as dist

    from .runner import RunConfig, run_rank

    G = dist.get_world_size()
    return [run_rank(RunConfig(world_size=G, **c).validate(), rank, heartbeat=heartbeat) for c in configs]
