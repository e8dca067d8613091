"""The GPU-faithful cost model: kernel calls from a kernel profile, memory ops at HBM bandwidth.

:class:`ProfileCost` prices a program's ops as a GPU runs them:

- a **kernel call** (query rows × key rows, full / causal / masked, fwd / bwd, the heads it covers)
  takes what the device's kernel profile (:mod:`ringsim.kernelprofile`) says for that shape — so a
  causal call runs below a full one of the same size, and half-height calls lose efficiency —
  plus the device's per-kernel overhead. Masked calls (sliding windows) are priced as full calls
  of their exact pairs;
- a **memory op** (merge, accumulation, copy: what the implementation does between kernels, with
  the bytes it moves) takes ``bytes / memory_bandwidth + launches × launch_overhead``;
- a call on a **row slice** of the rank's queries (zigzag and stripe steps after the rank's own
  shard) also pays the implementation's ``slice_overhead`` (a fraction of the call's time; for
  ring-flash-attn fitted to the development set's H800 half, see
  :data:`ringsim.strategies.ring.SLICE_OVERHEAD`);
- **transfers** go through NCCL: each link's bandwidth is scaled by the device's
  ``p2p_efficiency`` for its class (the fraction of a link NCCL send/recv achieves), in
  :meth:`ProfileCost.apply_to_topology`; and while a rank's send/recv is in flight, NCCL's kernel
  holds ``p2p_sms`` of the device's ``sms`` (one thread block per channel), so the compute beside
  it runs on the rest (:meth:`ProfileCost.transfer_sm_share`, applied by the engines'
  second pass, :func:`ringsim.engines.nccl_compute_slowdown`).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..blocks import KIND_CODES
from ..topology import Topology
from ..units import InputError
from .base import CostModel

__all__ = ["ProfileCost", "resolve_kernels", "KERNEL_CHOICES"]

KERNEL_CHOICES = ("fa2", "fa3", "cudnn", "roofline")


class ProfileCost(CostModel):
    """Kernel calls from ``profile`` (a :class:`~ringsim.kernelprofile.KernelProfile`), memory ops
    at the device's memory bandwidth, NCCL-achieved link bandwidth (see the module docstring)."""

    name = "kernel-profile"

    def __init__(self, profile, source: str | None = None):
        self.profile = profile
        self.source = source or profile.name

    def call_seconds(self, workload, topology, q_rows, k_rows, pairs, kind, phase, tiles=None, heads=None):
        m = workload.model
        q = np.asarray(q_rows, dtype=np.float64)
        k = np.asarray(k_rows, dtype=np.float64)
        kind = np.asarray(kind)
        pairs = np.asarray(pairs, dtype=np.float64)
        live = (pairs > 0) & (kind != KIND_CODES["empty"])
        out = np.zeros(np.broadcast(q, k, pairs).shape)
        if not live.any():
            return out
        causal = kind == KIND_CODES["causal"]
        qs, ks, ps = np.broadcast_to(q, out.shape), np.broadcast_to(k, out.shape), np.broadcast_to(pairs, out.shape)
        cs = np.broadcast_to(causal, out.shape)
        h = int(heads or m.heads)
        # the profile's FLOPs count 2·H·(d_qk + d_v) per pair as 4·H·d: price at d = (d_qk + d_v)/2
        d = max(1, int(round((m.head_dim + m.v_dim) / 2)))
        for c in (False, True):
            sel = live & (cs == c)
            if sel.any():
                out[sel] = self.profile.seconds(np.maximum(qs[sel], 1), np.maximum(ks[sel], 1), heads=h, head_dim=d,
                                                causal=c, phase=phase, batch=workload.batch, pairs=ps[sel])
        return np.where(live, out + topology.device.kernel_overhead_s, 0.0)

    def kernel_seconds(self, op, ctx) -> np.ndarray:
        """The call's seconds from the profile, and on a call whose queries are a row slice of the
        rank's (``q_start > 0``) the implementation's ``op.slice_overhead`` on top (see
        :data:`ringsim.strategies.ring.SLICE_OVERHEAD`)."""
        t = super().kernel_seconds(op, ctx)
        u = op.slice_overhead
        if u:
            t = t * np.where(op.sliced, 1.0 + u, 1.0)
        return t

    def apply_to_topology(self, topology: Topology, program=None) -> Topology:
        eff = dict(topology.device.p2p_efficiency)
        if not eff:
            return topology
        links = [replace(l, bandwidth_Bps=l.bandwidth_Bps * eff[l.link_class]) if l.link_class in eff else l
                 for l in topology.links]
        return topology.with_links(links, "")

    def transfer_sm_share(self, topology: Topology) -> dict[str, float]:
        return topology.device.p2p_sm_share()

    def describe(self) -> dict:
        return {"name": self.name, "profile": self.profile.name, "family": self.profile.family,
                "source": self.source}


def resolve_kernels(kernels: str | None, topology: Topology):
    """The cost model ``--kernels`` names for a topology's device: ``fa2``/``fa3``/``cudnn`` (the
    device's profile of that family), ``roofline``, a shipped profile name or a profile file;
    None: the device's default family (roofline when it has none)."""
    from ..kernelprofile import load_profile, profile_names
    from .roofline import RooflineCost

    dev = topology.device
    choice = kernels or dev.default_kernels or "roofline"
    if choice == "roofline":
        return RooflineCost()
    if choice in ("fa2", "fa3", "cudnn"):
        name = dev.profile_for(choice)
        if name is None:
            have = ", ".join(f for f, _ in dev.kernel_profiles) or "none"
            raise InputError(f"device {dev.name} of topology {topology.name} has no {choice} kernel profile "
                             f"(it has: {have}); use --kernels roofline, one of those, or a profile FILE")
        return ProfileCost(load_profile(name), name)
    if choice in profile_names() or choice.endswith((".yaml", ".yml")) or "/" in choice:
        return ProfileCost(load_profile(choice), choice)
    raise InputError(f"unknown --kernels {choice!r}; use fa2, fa3, cudnn, roofline, a shipped profile "
                     f"({', '.join(profile_names())}) or a profile file")
