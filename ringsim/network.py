"""The link model: transfers as flows sharing full-duplex links max-min fairly.

Picture a set of pipes (directed links, one per direction of a full-duplex cable), each with a
capacity in bytes per second and a propagation latency. A **transfer** is a *flow* of ``nbytes``
along a fixed route (a tuple of directed link ids, see :meth:`Topology.route`):

1. it first waits the route's total latency (the sum of its links' ``latency_s``: the alpha term);
2. then it *streams* its bytes. While streaming it holds a rate; the rates of all streaming flows are
   the **max-min fair** allocation (progressive filling, a.k.a. water-filling): every flow's rate
   rises together until some link is full; the flows crossing a full link freeze at that rate, and
   the others keep rising until every flow is frozen. A flow alone on its route therefore streams
   at the route's bottleneck bandwidth, and the transfer takes ``latency + bytes / bottleneck``.
3. Rates change only when a flow starts or stops streaming, and then only for the flows that are
   (transitively) connected to it through shared links — its *connected component*. So a ring
   whose hops share no link pays O(1) work per event, however many ranks it has. Flows that start
   or stop at the same instant are settled together: one recomputation per component per instant.

:func:`max_min_rates` is the allocation as a pure function; :class:`FlowNetwork` runs it inside a
simpy environment.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import simpy

from .topology import Topology

__all__ = ["max_min_rates", "FlowNetwork"]

_SAT_RTOL = 1e-12  # a link whose fair share is within this of the minimum saturates in the same round


def _progressive_filling(routes: Sequence[Sequence[int]], capacity: Sequence[float]) -> list[float]:
    """Max-min fair rates for flows over directed links (pure Python; see :func:`max_min_rates`)."""
    n = len(routes)
    rates = [0.0] * n
    # links actually used, with the unfrozen flows crossing them
    on_link: dict[int, list[int]] = {}
    frozen = [False] * n
    for f, route in enumerate(routes):
        if not route:
            rates[f] = float("inf")  # no link: nothing limits it
            frozen[f] = True
            continue
        for lid in route:
            on_link.setdefault(lid, []).append(f)
    remaining = {lid: float(capacity[lid]) for lid in on_link}
    count = {lid: len(fs) for lid, fs in on_link.items()}
    level = 0.0
    active = {lid for lid in on_link}
    while active:
        # the smallest fair share of what is left on a link with unfrozen flows
        shares = {lid: remaining[lid] / count[lid] for lid in active}
        delta = min(shares.values())
        level += delta
        saturated = [lid for lid, sh in shares.items() if sh <= delta * (1.0 + _SAT_RTOL)]
        for lid in active:
            remaining[lid] -= delta * count[lid]
        newly = []
        for lid in saturated:
            for f in on_link[lid]:
                if not frozen[f]:
                    frozen[f] = True
                    rates[f] = level
                    newly.append(f)
        for f in newly:
            for lid in routes[f]:
                count[lid] -= 1
        active = {lid for lid in active if count[lid] > 0}
    return rates


def max_min_rates(routes: list[tuple[int, ...]], capacity_Bps: Sequence[float]) -> np.ndarray:
    """Max-min fair rate (bytes/s) of each flow, by progressive filling.

    ``routes[f]`` is the tuple of directed link ids flow ``f`` crosses; ``capacity_Bps[l]`` is link
    ``l``'s capacity. All unfrozen flows' rates rise together; when a link fills, the flows on it
    freeze. Example: links A (1 GB/s) and B (2 GB/s), flows {A}, {A, B}, {B}: A fills first at
    0.5 GB/s each, then the flow alone on B takes the rest of B: rates 0.5, 0.5, 1.5 GB/s.
    A flow with an empty route gets ``inf``.
    """
    return np.array(_progressive_filling(routes, capacity_Bps), dtype=np.float64)


class _Flow:
    __slots__ = ("id", "route", "nbytes", "remaining", "rate", "last_s", "version", "done", "stream_start_s",
                 "bottleneck")

    def __init__(self, fid, route, nbytes, done):
        self.id = fid
        self.route = route
        self.nbytes = nbytes
        self.remaining = float(nbytes)
        self.rate = 0.0
        self.last_s = 0.0
        self.version = 0
        self.done = done
        self.stream_start_s = 0.0


class FlowNetwork:
    """Flows over a topology's directed links inside a simpy environment.

    Like water in a set of pipes: each open tap (a streaming flow) gets the max-min fair share of
    the pipes it runs through, and when a tap opens or closes the water redistributes only among
    the taps connected to it through shared pipes.

    ``transfer(route, nbytes)`` returns a simpy event that fires when the last byte arrives. With
    ``record=True`` every change of a link's total rate is logged in ``rate_log`` as
    ``(time_s, link_id, total_rate_Bps)``. ``link_bytes`` and ``link_busy_s`` (time with at least one
    streaming flow; the latency wait does not occupy a link) are kept per directed link id.
    """

    def __init__(self, env: simpy.Environment, topology: Topology, record: bool = False):
        self.env = env
        self.topology = topology
        self.capacity = [l.bandwidth_Bps for l in topology.links]
        self.latency = [l.latency_s for l in topology.links]
        self.record = record
        self.rate_log: list[tuple[float, int, float]] = []
        self.link_bytes: dict[int, float] = {}
        self.link_busy_s: dict[int, float] = {}
        self._streaming: dict[int, dict] = {}  # link id → {flow id: flow} streaming on it (ordered)
        self._busy_since: dict[int, float] = {}
        self._next_id = 0
        self._dirty: set = set()
        self._flush_pending = False
        self._route_info: dict[tuple, tuple[float, float]] = {}  # route → (latency_s, bottleneck_Bps)
        self.active_flows = 0

    # ---- public -----------------------------------------------------------------------------
    def transfer(self, route: Sequence[int], nbytes: float, done: simpy.Event | None = None) -> simpy.Event:
        """Start a flow of ``nbytes`` along ``route`` now; the returned event (``done`` if given)
        fires at completion with the completion time as its value."""
        env = self.env
        if done is None:
            done = env.event()
        route = tuple(route)
        info = self._route_info.get(route)
        if info is None:
            info = self._route_info[route] = (self.topology.route_latency_s(route),
                                              min((self.capacity[l] for l in route), default=float("inf")))
        flow = _Flow(self._next_id, route, float(nbytes), done)
        flow.bottleneck = info[1]
        self._next_id += 1
        self.active_flows += 1
        if info[0] > 0:
            t = env.timeout(info[0])
            t.flow = flow
            t.callbacks.append(self._on_latency)
        else:
            self._start_streaming(flow)
        return done

    # ---- internals ----------------------------------------------------------------------------
    def _on_latency(self, ev) -> None:
        self._start_streaming(ev.flow)

    def _start_streaming(self, flow: _Flow) -> None:
        now = self.env.now
        flow.stream_start_s = now
        flow.last_s = now
        if not flow.route or flow.remaining <= 0:
            self._finish(flow, streaming=False)
            return
        solo = True
        streaming = self._streaming
        for lid in flow.route:
            s = streaming.get(lid)
            if s is None:
                s = streaming[lid] = {}
            if s:
                solo = False
            else:
                self._busy_since[lid] = now
            s[flow.id] = flow
        if solo:  # alone on every link of its route: the bottleneck rate, nothing else changes
            flow.rate = flow.bottleneck
            self._set_timer(flow)
            if self.record:
                for lid in sorted(flow.route):
                    self.rate_log.append((now, lid, flow.rate))
        else:
            self._mark_dirty(flow.route)

    def _mark_dirty(self, links) -> None:
        """Rates on these links must be recomputed; done once per instant, after every flow that
        starts or ends at this instant has done so (simultaneous starts cost one recomputation)."""
        self._dirty.update(links)
        if not self._flush_pending:
            self._flush_pending = True
            ev = self.env.event()
            ev.callbacks.append(self._flush)
            ev.succeed()  # queued behind the events already due now

    def _flush(self, _ev) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        seen: set = set()
        for lid in sorted(dirty):
            if lid not in seen and self._streaming.get(lid):
                seen |= self._recompute((lid,))

    def _set_timer(self, f: _Flow) -> None:
        f.version += 1
        t = self.env.timeout(max(f.remaining, 0.0) / f.rate)
        t.flow, t.version = f, f.version
        t.callbacks.append(self._on_timer)

    def _component(self, seed_links) -> tuple[list[_Flow], set]:
        """Streaming flows connected to ``seed_links`` through shared links, and their links."""
        flows: dict[int, _Flow] = {}
        links: set = set()
        stack = list(seed_links)
        while stack:
            lid = stack.pop()
            if lid in links:
                continue
            links.add(lid)
            for f in self._streaming.get(lid, {}).values():
                if f.id not in flows:
                    flows[f.id] = f
                    stack.extend(l for l in f.route if l not in links)
        return [flows[k] for k in sorted(flows)], links

    def _recompute(self, seed_links) -> set:
        """New max-min rates for the component reached from ``seed_links``; returns its links."""
        env = self.env
        now = env.now
        comp, links = self._component(seed_links)
        if len(comp) == 1:
            f = comp[0]
            new_rates = [f.bottleneck]
        else:
            new_rates = _progressive_filling([f.route for f in comp], self.capacity)
        for f, rate in zip(comp, new_rates):
            if f.rate == rate:
                continue  # unchanged: its completion timer still holds
            # bytes sent since the last rate change
            f.remaining -= f.rate * (now - f.last_s)
            f.last_s = now
            f.rate = rate
            self._set_timer(f)
        if self.record:
            for lid in sorted(links):
                total = sum(f.rate for f in self._streaming.get(lid, {}).values())
                self.rate_log.append((now, lid, total))
        return links

    def _on_timer(self, ev) -> None:
        if ev.version != ev.flow.version:
            return  # the rate changed since this timer was set
        self._finish(ev.flow, streaming=True)

    def _finish(self, flow: _Flow, streaming: bool) -> None:
        now = self.env.now
        flow.remaining = 0.0
        for lid in flow.route:
            self.link_bytes[lid] = self.link_bytes.get(lid, 0.0) + flow.nbytes
            self.link_busy_s.setdefault(lid, 0.0)
        if streaming:
            for lid in flow.route:
                s = self._streaming[lid]
                del s[flow.id]
                if not s:
                    self.link_busy_s[lid] += now - self._busy_since.pop(lid)
                    if self.record:
                        self.rate_log.append((now, lid, 0.0))
            remaining_links = [l for l in flow.route if self._streaming[l]]
            if remaining_links:
                self._mark_dirty(remaining_links)
        self.active_flows -= 1
        flow.done.succeed(now)
