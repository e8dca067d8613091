"""Topologies: devices, full-duplex links and the routes ring hops take (DESIGN.md §3.5).

Model: a machine is a directed graph. Vertices are GPUs and the things between them (NVSwitches,
PCIe host bridges, NICs, InfiniBand switches). Every physical link is full duplex and is stored as
two directed :class:`Link` objects, one per direction, each with its own bandwidth and latency, so
traffic one way never slows traffic the other way. A transfer from rank a to rank b follows
``route(a, b)``: a fixed, deterministic list of directed link ids (shortest path by hops, ties
broken by the order links were declared).

Ranks map to GPUs in declaration order unless ``placement`` (a list of GPU names, one per rank)
says otherwise.

**GPU transit.** By default a route may pass through another GPU (a GPU forwarding over NVLink to
the NIC on the right rail, as NCCL's PXN does). A topology whose ``meta["gpu_transit"]`` is False
(the YAML key ``gpu_transit: false``) routes every transfer around other GPUs: a transfer leaves
through the sending GPU's own links and enters through the receiver's, and only a pair that no
such route joins (a torus of direct GPU links) falls back to the shortest path through GPUs. On a
rail-optimised fat-tree that means cross-rail traffic climbs to the spine.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx

from .units import InputError

__all__ = ["Device", "Link", "Topology"]


@dataclass(frozen=True)
class Device:
    """A GPU as the cost models see it.

    The roofline uses ``peak_flops × efficiency``, ``tile`` and ``kernel_overhead_s``. The
    GPU-faithful model (:class:`ringsim.costs.kernels.ProfileCost`) uses a kernel profile per family
    (``kernel_profiles``: family → profile name or file; ``default_kernels``: the family a preset
    uses by default), ``memory_bandwidth_Bps`` for the memory-bound ops between kernels,
    ``launch_s`` per kernel launch of those ops, ``p2p_efficiency`` (link class → the fraction
    of a link's bandwidth NCCL point-to-point transfers achieve), and ``sms`` with ``p2p_sms``
    (link class → the SMs an NCCL send/recv over that class holds while in flight: one thread
    block per channel), which slow the compute that runs beside a transfer
    (:func:`ringsim.engines.nccl_compute_slowdown`)."""

    name: str
    peak_flops: float  # FLOP/s, dense, in the workload's dtype
    efficiency: float  # achieved fraction of peak for attention kernels
    memory_bytes: float
    tile: tuple[int, int] | None = None  # (q, k) tokens; kernels skip only whole empty tiles
    kernel_overhead_s: float = 0.0  # fixed cost per kernel launch
    speed_factor: float = 1.0  # what-ifs: 0.5 = this device runs at half speed
    memory_bandwidth_Bps: float | None = None  # HBM (or DRAM) bandwidth for memory-bound ops
    launch_s: float = 0.0  # per kernel launch of a memory-bound op
    kernel_profiles: tuple = ()  # ((family, profile name or path), ...)
    default_kernels: str | None = None  # the family used by default ("roofline" when None)
    p2p_efficiency: tuple = ()  # ((link class, achieved fraction of the link's bandwidth), ...)
    sms: int | None = None  # streaming multiprocessors (compute units) of the GPU
    p2p_sms: tuple = ()  # ((link class, SMs an NCCL send/recv over it holds while in flight), ...)

    def p2p_sm_share(self) -> dict[str, float]:
        """Link class → the share of the device's SMs an NCCL transfer over it takes from compute."""
        if not self.sms:
            return {}
        return {c: min(1.0, float(n) / self.sms) for c, n in self.p2p_sms if n > 0}

    def profile_for(self, family: str) -> str | None:
        return dict(self.kernel_profiles).get(family)


@dataclass(frozen=True)
class Link:
    """One direction of a full-duplex link."""

    id: int
    src: str
    dst: str
    bandwidth_Bps: float
    latency_s: float
    link_class: str = "link"  # nvlink | ib | pcie | loopback | ...


@dataclass
class Topology:
    name: str
    device: Device
    gpus: list[str]  # GPU vertex names in rank order (after placement)
    links: list[Link]
    source: str = ""  # file or preset it came from
    meta: dict = field(default_factory=dict)
    device_overrides: dict[int, Device] = field(default_factory=dict)  # rank → device (stragglers)

    def __post_init__(self):
        self._graph = nx.DiGraph()
        self._edge = {}
        for link in self.links:
            if (link.src, link.dst) in self._edge:
                continue  # first declared wins (deterministic)
            self._edge[(link.src, link.dst)] = link.id
            self._graph.add_edge(link.src, link.dst)
        self._route_cache: dict[tuple[str, str], tuple[int, ...]] = {}
        self._split = None  # the graph without GPU transit (built on first use)

    @property
    def gpu_transit(self) -> bool:
        """Whether routes may pass through GPUs other than their ends (see the module docstring)."""
        return bool(self.meta.get("gpu_transit", True))

    def _no_transit_path(self, src: str, dst: str):
        """Shortest path from src to dst whose inner vertices are no GPUs, or None. Each GPU is
        split into an ``out`` vertex (its outgoing links) and an ``in`` vertex (incoming links,
        none leaving it), so a path can only start and end at a GPU."""
        if self._split is None:
            gpus = set(self.meta.get("all_gpus") or self.gpus) | set(self.gpus)
            g = nx.DiGraph()
            for a, b in self._edge:
                g.add_edge(("out", a) if a in gpus else a, ("in", b) if b in gpus else b)
            self._split = g
        try:
            path = nx.shortest_path(self._split, ("out", src), ("in", dst))
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None
        return [v[1] if isinstance(v, tuple) else v for v in path]

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def device_of(self, rank: int) -> Device:
        return self.device_overrides.get(rank, self.device)

    def gpu_of_rank(self, rank: int) -> str:
        return self.gpus[rank]

    def check_world_size(self, world_size: int) -> None:
        if world_size > self.num_gpus:
            is_file = bool(self.source) and not self.source.startswith("preset:") and self.source != self.name
            where = f" ({self.source})" if is_file else ""
            fix = ("add GPUs (or a larger dimension) to the file" if is_file
                   else "pick a larger topology (see `ringsim topology list`)")
            raise InputError(f"topology {self.name}{where} has {self.num_gpus} GPUs, fewer than world size "
                             f"{world_size}; lower --world-size or {fix}")
        if world_size <= 0:
            raise InputError(f"world size must be positive, got {world_size}")

    def route_between(self, src: str, dst: str) -> tuple[int, ...]:
        """Directed link ids from vertex src to vertex dst (empty when src == dst)."""
        key = (src, dst)
        if key not in self._route_cache:
            if src == dst:
                self._route_cache[key] = ()
            else:
                path = None if self.gpu_transit else self._no_transit_path(src, dst)
                try:
                    path = path or nx.shortest_path(self._graph, src, dst)
                except (nx.NetworkXNoPath, nx.NodeNotFound):
                    raise InputError(f"topology {self.name}: no route from {src} to {dst}; "
                                     "add links so every GPU reaches every other") from None
                self._route_cache[key] = tuple(self._edge[(a, b)] for a, b in zip(path, path[1:]))
        return self._route_cache[key]

    def route(self, src_rank: int, dst_rank: int) -> tuple[int, ...]:
        return self.route_between(self.gpus[src_rank], self.gpus[dst_rank])

    def route_latency_s(self, route) -> float:
        return sum(self.links[i].latency_s for i in route)

    def route_bottleneck_Bps(self, route) -> float:
        return min((self.links[i].bandwidth_Bps for i in route), default=float("inf"))

    def ring_hops(self, world_size: int) -> list[dict]:
        """For a ring of ``world_size`` ranks: each hop r → r+1 with its route, bottleneck and latency."""
        self.check_world_size(world_size)
        hops = []
        for r in range(world_size):
            dst = (r + 1) % world_size
            route = self.route(r, dst)
            hops.append({
                "src": r, "dst": dst, "src_gpu": self.gpus[r], "dst_gpu": self.gpus[dst],
                "route": list(route),
                "path": [self.links[i].src for i in route] + ([self.links[route[-1]].dst] if route else []),
                "link_classes": sorted({self.links[i].link_class for i in route}),
                "bottleneck_Bps": self.route_bottleneck_Bps(route),
                "latency_s": self.route_latency_s(route),
            })
        return hops

    def ring_shares_links(self, world_size: int) -> bool:
        """True when two hops of one ring cross the same directed link (contention possible)."""
        seen: set[int] = set()
        for r in range(world_size):
            for lid in self.route(r, (r + 1) % world_size):
                if lid in seen:
                    return True
                seen.add(lid)
        return False

    # ---- what-ifs ------------------------------------------------------------------------------
    def with_links(self, links: list[Link], suffix: str = "") -> "Topology":
        return Topology(self.name + suffix, self.device, list(self.gpus), links, self.source, dict(self.meta),
                        dict(self.device_overrides))

    def scale_link_class(self, link_class: str, bandwidth: float = 1.0, latency: float = 1.0) -> "Topology":
        classes = {l.link_class for l in self.links}
        if link_class not in classes:
            raise InputError(f"topology {self.name} has no link class {link_class!r}; it has {sorted(classes)}")
        links = [replace(l, bandwidth_Bps=l.bandwidth_Bps * bandwidth, latency_s=l.latency_s * latency)
                 if l.link_class == link_class else l for l in self.links]
        return self.with_links(links, f"[{link_class} bw×{bandwidth:g} lat×{latency:g}]")

    def with_slow_rank(self, rank: int, factor: float) -> "Topology":
        if not factor > 0:
            raise InputError(f"straggler factor must be positive, got {factor}")
        t = self.with_links(list(self.links), f"[rank {rank} ×{factor:g}]")
        t.device_overrides[rank] = replace(self.device_of(rank), speed_factor=self.device_of(rank).speed_factor * factor)
        return t

    def degrade_link(self, src_vertex: str, dst_vertex: str, factor: float) -> "Topology":
        """What-if: the full-duplex link between two vertices runs at ``factor`` × its bandwidth.

        Both directions are scaled (a flaky cable or a down-trained port slows both ways); latency
        is unchanged. ``factor`` 0.5 halves the bandwidth. Returns a new topology.
        """
        if not factor > 0:
            raise InputError(f"link degrade factor must be positive, got {factor}; e.g. 0.5 halves the bandwidth")
        ends = {(src_vertex, dst_vertex), (dst_vertex, src_vertex)}
        hit = [l.id for l in self.links if (l.src, l.dst) in ends]
        if not hit:
            raise InputError(f"topology {self.name} has no link between {src_vertex!r} and {dst_vertex!r}; "
                             "name two vertices that a link joins (see `ringsim topology show`)")
        hit_set = set(hit)
        links = [replace(l, bandwidth_Bps=l.bandwidth_Bps * factor) if l.id in hit_set else l for l in self.links]
        return self.with_links(links, f"[{src_vertex}<->{dst_vertex} bw×{factor:g}]")

    def with_placement(self, gpus: list[str]) -> "Topology":
        """What-if: map ranks onto these GPU vertices (one per rank, rank order); routes follow.

        The names must be GPUs of this topology (every GPU the file declared, even those a previous
        placement left out) with none repeated; fewer names than GPUs makes a smaller ring. Device
        overrides stay attached to their rank numbers.
        """
        known = list(self.meta.get("all_gpus") or self.gpus)
        known_set = set(known)
        if not isinstance(gpus, (list, tuple)) or not gpus:
            raise InputError("placement must be a non-empty list of GPU names, one per rank")
        seen: set[str] = set()
        for i, g in enumerate(gpus):
            if g not in known_set:
                sample = ", ".join(known[:4]) + (", …" if len(known) > 4 else "")
                raise InputError(f"placement[{i}]: {g!r} is not a GPU of topology {self.name}; "
                                 f"use GPU names such as {sample}")
            if g in seen:
                raise InputError(f"placement[{i}]: GPU {g!r} appears twice; give each rank a different GPU")
            seen.add(g)
        t = Topology(self.name + "[placement]", self.device, list(gpus), list(self.links), self.source,
                     dict(self.meta), dict(self.device_overrides))
        return t
