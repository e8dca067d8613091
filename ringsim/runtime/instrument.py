"""Per-rank interval recording for measured timelines.

A :class:`Recorder` is a rank's stopwatch log: ``mark()`` takes a timestamp, ``add()`` files one
interval (``step, phase, kind, start, end, peer, bytes, pairs, flops``) under the current iteration.
On CPU a timestamp is ``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux, shared by every
process of one host); on GPU it is a CUDA event on the current stream, turned into host
nanoseconds at the end through one anchor event recorded on an idle stream together with a host
timestamp. :class:`NullRecorder` records nothing (the uninstrumented baseline).

Clock alignment (:func:`common_origin`): after a barrier every rank reads its clock; the values are
all-gathered. If all ranks run on one host their monotonic clocks are the same clock, so the
origin is simply the smallest reading (exact). Across hosts each rank's own post-barrier reading
is its origin: the barrier's release is taken as one instant, and the spread of readings within a
host is recorded as the alignment's uncertainty.
"""
from __future__ import annotations

import socket
import time

import torch

__all__ = ["Recorder", "NullRecorder", "common_origin"]


class Recorder:
    enabled = True

    def __init__(self, rank: int, device: torch.device | None = None):
        self.rank = rank
        self.cuda = device is not None and device.type == "cuda"
        self.iteration = -1
        self.rows: list[tuple] = []  # (iteration, step, phase, kind, t0, t1, peer, bytes, pairs, flops)
        self._anchor = None

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter_ns()

    def host_ns(self) -> int:
        return time.perf_counter_ns()

    def add(self, step, phase, kind, t0, t1, peer=-1, nbytes=0, pairs=0, flops=0.0):
        self.rows.append((self.iteration, step, phase, kind, t0, t1, peer, nbytes, pairs, flops))

    def _to_ns(self, t) -> int:
        if isinstance(t, int):
            return t
        anchor_ns, anchor_ev = self._anchor
        return int(anchor_ns + anchor_ev.elapsed_time(t) * 1e6)

    def resolve(self) -> list[tuple]:
        """Rows with host-nanosecond timestamps (synchronises the GPU once)."""
        if self.cuda:
            torch.cuda.synchronize()
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            ev.synchronize()
            self._anchor = (time.perf_counter_ns(), ev)
            # elapsed_time(anchor, e) is negative for events before the anchor, which is what we want
        return [(it, st, ph, kd, self._to_ns(a), self._to_ns(b), pe, nb, pa, fl)
                for (it, st, ph, kd, a, b, pe, nb, pa, fl) in self.rows]


class NullRecorder(Recorder):
    """Records nothing: the uninstrumented run the overhead is measured against."""

    enabled = False

    def mark(self):
        return 0

    def add(self, *args, **kwargs):
        pass


def common_origin(rank: int, world_size: int, rounds: int = 3) -> dict:
    """Agree on a time origin across ranks; returns ``{"origin_ns", "method", "spread_s", "hosts"}``.

    ``origin_ns`` is in this rank's clock; subtract it from this rank's timestamps."""
    import torch.distributed as dist

    host = socket.gethostname()
    readings = []
    for _ in range(rounds):
        dist.barrier()
        readings.append(time.perf_counter_ns())
    if world_size == 1:
        return {"origin_ns": readings[-1], "method": "single rank", "spread_s": 0.0, "hosts": [host]}
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, (host, readings[-1]))  # objects: works on gloo and NCCL alike
    hosts = [h for h, _ in gathered]
    vals = [int(t) for _, t in gathered]
    spread_s = (max(vals) - min(vals)) * 1e-9
    if len(set(hosts)) == 1:
        return {"origin_ns": min(vals), "method": "one host: shared CLOCK_MONOTONIC, origin = earliest "
                "post-barrier reading", "spread_s": spread_s, "hosts": hosts}
    return {"origin_ns": readings[-1], "method": "multi-host: barrier release taken as the common instant",
            "spread_s": spread_s, "hosts": hosts}
